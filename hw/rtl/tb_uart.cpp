// Verilator testbench of a board design, `bnnflow_system`, seen only through its serial pins.
//
// The simulated host drives `uart_rx` bit by bit and decodes every byte on `uart_tx`, as a USB-serial adapter
// would; nothing inside the design is looked at, so this tests what a real board would do. Two modes:
//
//   tb_uart file --in IN.bin --out OUT.bin --expect N [options]
//       Send the bytes of IN.bin (raw binary, in wire order), stop once N bytes have come back (or at the cycle
//       limit), write them to OUT.bin (raw binary) and print one JSON line of results on stdout: sent, received,
//       expected (byte counts); cycles (all simulated, reset included); done_cycle (when the N-th byte was in);
//       timeout; error (the pin was ever high) and error_cycle (its first high cycle, or -1); tx_framing_errors
//       (bytes from the design with a bad stop bit); frame_cycles (with --frame: per frame, from the start bit of
//       its first byte to the stop-bit sample of its last output byte).
//       --max-cycles C      give up after C clock cycles (default 100000000); exit status 2 on this timeout
//       --frame I:O         frames are I bytes in and O bytes out; enables per-frame latencies in the report
//       --lockstep          send a frame only after the previous frame's O bytes came back (needs --frame),
//                           which is how hw/fpga_run.py talks to a board
//       --gap-bits A[:B]    idle time between bytes, uniform in [A, B] bit periods (default 0:2, as an adapter
//                           that mostly sends back to back but sometimes pauses between USB packets)
//       --seed S            seed of the idle gaps (default 1)
//       --rate-error P      host bit period off by P percent (e.g. 3 or -3), to test mid-bit sampling
//       --bad-stop K        send byte K (counting from 0) with a stop bit of 0: a framing error
//       --settle-cycles C   keep listening C cycles after the N-th byte, to catch bytes beyond those expected
//   tb_uart pty [--link PATH] [--max-cycles C]
//       Open a pseudo-terminal, print its device path as the first line on stdout, and carry bytes between it
//       and the simulated serial line until SIGTERM/SIGINT (or C cycles, if given). Host software opens the path with
//       pyserial as it would /dev/ttyUSB0; --link also makes PATH a symlink to it. On exit one JSON line of
//       results is printed; a rising `error` pin is reported at once as a JSON line too.
//
// Exit status: 0 done, 1 bad arguments or files, 2 timeout (file mode).
//
// Build-time settings (C++ defines, e.g. through hw/rtl/verilator.build(defines=...)):
//   CLKS_PER_BIT  clock cycles per bit; must equal the design's CLKS_PER_BIT parameter (default 868)
//   TB_TOP        the Verilated class of the top module (default Vbnnflow_system). Verilator cannot be told a
//                 parameter through build(), so hw/rtl/uart_cosim.py builds a one-line wrapper top that sets
//                 bnnflow_system's CLKS_PER_BIT and names it here.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "verilated.h"

#ifndef CLKS_PER_BIT
#define CLKS_PER_BIT 868
#endif
#ifndef TB_TOP
#define TB_TOP Vbnnflow_system
#endif
#define TB_STR2(x) #x
#define TB_STR(x) TB_STR2(x)
#define TB_HEADER(x) TB_STR(x.h)
#include TB_HEADER(TB_TOP)

namespace {

constexpr uint64_t kResetCycles = 16;
constexpr int kCpb = CLKS_PER_BIT;
static_assert(kCpb >= 4, "CLKS_PER_BIT must be at least 4: the receiver samples in the middle of each bit");

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

// The design under test and its clock.
class Board {
  public:
    Board() : ctx_(new VerilatedContext), top_(new TB_TOP{ctx_.get()}) {
        top_->clk = 0;
        top_->rst = 1;
        top_->uart_rx = 1;
        top_->eval();
    }
    ~Board() { top_->final(); }

    // One clock cycle with `rx` on uart_rx and `rst` on rst; returns uart_tx as it is after the rising edge.
    int tick(int rx, bool rst) {
        top_->uart_rx = static_cast<CData>(rx);
        top_->rst = rst;
        top_->clk = 1;
        top_->eval();
        ++cycle_;
        int tx = top_->uart_tx;
        if (top_->error && !error_seen_) {
            error_seen_ = true;
            error_cycle_ = cycle_;
        }
        top_->clk = 0;
        top_->eval();
        return tx;
    }

    uint64_t cycle() const { return cycle_; }
    bool error() const { return top_->error; }
    bool error_seen() const { return error_seen_; }
    int64_t error_cycle() const { return error_seen_ ? static_cast<int64_t>(error_cycle_) : -1; }

  private:
    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<TB_TOP> top_;
    uint64_t cycle_ = 0;
    bool error_seen_ = false;
    uint64_t error_cycle_ = 0;
};

// The host's transmitter: turns queued bytes into levels on uart_rx, one 8N1 frame after another.
class LineDriver {
  public:
    LineDriver(double period, double gap_min, double gap_max, uint64_t seed)
        : period_(period), gap_(gap_min * kCpb, gap_max * kCpb), rng_(seed) {}

    void push(uint8_t byte, bool bad_stop) { queue_.push_back({byte, bad_stop}); }
    bool idle() const { return !active_ && queue_.empty(); }
    size_t queued() const { return queue_.size(); }
    void hold_until(uint64_t cycle) { next_start_ = cycle; }

    // The level at cycle `now`; sets `started` when a byte's start bit begins in this cycle.
    int level(uint64_t now, bool* started) {
        *started = false;
        if (active_ && now - start_ >= static_cast<uint64_t>(std::ceil(10 * period_))) {
            active_ = false;
            next_start_ = now + static_cast<uint64_t>(std::llround(gap_(rng_)));
        }
        if (!active_) {
            if (queue_.empty() || now < next_start_) return 1;
            byte_ = queue_.front().byte;
            bad_stop_ = queue_.front().bad_stop;
            queue_.pop_front();
            active_ = true;
            start_ = now;
            *started = true;
        }
        int bit = static_cast<int>(static_cast<double>(now - start_) / period_);
        if (bit == 0) return 0;
        if (bit <= 8) return (byte_ >> (bit - 1)) & 1;
        return (bit == 9 && bad_stop_) ? 0 : 1;
    }

  private:
    struct Pending {
        uint8_t byte;
        bool bad_stop;
    };
    double period_;
    std::uniform_real_distribution<double> gap_;
    std::mt19937_64 rng_;
    std::deque<Pending> queue_;
    bool active_ = false;
    uint64_t start_ = 0;
    uint64_t next_start_ = 0;
    uint8_t byte_ = 0;
    bool bad_stop_ = false;
};

// The host's receiver: samples uart_tx in the middle of each bit, as a USB-serial adapter does.
class LineDecoder {
  public:
    bool idle() const { return !active_; }
    uint64_t framing_errors() const { return framing_errors_; }

    // Feed the level at cycle `now`; returns true and sets `*out` when a byte is complete.
    bool sample(uint64_t now, int level, uint8_t* out) {
        if (!active_) {
            if (wait_high_) {
                wait_high_ = level == 0;
                return false;
            }
            if (level == 0) {
                active_ = true;
                start_ = now;
                byte_ = 0;
            }
            return false;
        }
        uint64_t since = now - start_;
        if (since < static_cast<uint64_t>(kCpb / 2) || (since - kCpb / 2) % kCpb) return false;
        uint64_t bit = (since - kCpb / 2) / kCpb;
        if (bit == 0) {
            active_ = level == 0;  // high again in mid start bit: a glitch
        } else if (bit <= 8) {
            byte_ |= static_cast<uint8_t>(level << (bit - 1));
        } else {
            active_ = false;
            if (level) {
                *out = byte_;
                return true;
            }
            ++framing_errors_;
            wait_high_ = true;
        }
        return false;
    }

  private:
    bool active_ = false;
    bool wait_high_ = false;
    uint64_t start_ = 0;
    uint8_t byte_ = 0;
    uint64_t framing_errors_ = 0;
};

[[noreturn]] void usage(const char* message) {
    std::fprintf(stderr, "tb_uart: %s\n", message);
    std::fprintf(stderr,
                 "usage: tb_uart file --in IN.bin --out OUT.bin --expect N [--max-cycles C] [--frame I:O]\n"
                 "                    [--lockstep] [--gap-bits A[:B]] [--seed S] [--rate-error P] [--bad-stop K]\n"
                 "                    [--settle-cycles C]\n"
                 "       tb_uart pty [--link PATH] [--max-cycles C]\n");
    std::exit(1);
}

uint64_t parse_uint(const char* text, const char* what) {
    char* end = nullptr;
    errno = 0;
    unsigned long long value = std::strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') usage((std::string("bad number for ") + what).c_str());
    return value;
}

double parse_double(const char* text, const char* what) {
    char* end = nullptr;
    double value = std::strtod(text, &end);
    if (end == text || *end) usage((std::string("bad number for ") + what).c_str());
    return value;
}

struct Options {
    std::string mode;
    std::string in_path, out_path, link;
    uint64_t expect = 0;
    bool expect_set = false;
    uint64_t max_cycles = 0;  // 0: the mode's default, 100000000 in file mode and no limit in pty mode
    uint64_t frame_in = 0, frame_out = 0;
    bool lockstep = false;
    double gap_min = 0, gap_max = 2;
    uint64_t seed = 1;
    double rate_error = 0;
    int64_t bad_stop = -1;
    uint64_t settle = 0;
};

Options parse(int argc, char** argv) {
    if (argc < 2) usage("missing mode");
    Options o;
    o.mode = argv[1];
    if (o.mode != "file" && o.mode != "pty") usage("the mode is `file` or `pty`");
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) usage((a + " needs a value").c_str());
            return argv[++i];
        };
        if (a == "--in") {
            o.in_path = value();
        } else if (a == "--out") {
            o.out_path = value();
        } else if (a == "--expect") {
            o.expect = parse_uint(value(), "--expect");
            o.expect_set = true;
        } else if (a == "--max-cycles") {
            o.max_cycles = parse_uint(value(), "--max-cycles");
        } else if (a == "--frame") {
            std::string v = value();
            size_t colon = v.find(':');
            if (colon == std::string::npos) usage("--frame is IN_BYTES:OUT_BYTES");
            o.frame_in = parse_uint(v.substr(0, colon).c_str(), "--frame");
            o.frame_out = parse_uint(v.substr(colon + 1).c_str(), "--frame");
            if (!o.frame_in || !o.frame_out) usage("--frame sizes must be positive");
        } else if (a == "--lockstep") {
            o.lockstep = true;
        } else if (a == "--gap-bits") {
            std::string v = value();
            size_t colon = v.find(':');
            o.gap_min = parse_double(v.substr(0, colon).c_str(), "--gap-bits");
            o.gap_max = colon == std::string::npos ? o.gap_min : parse_double(v.substr(colon + 1).c_str(), "--gap-bits");
            if (o.gap_min < 0 || o.gap_max < o.gap_min) usage("--gap-bits needs 0 <= A <= B");
        } else if (a == "--seed") {
            o.seed = parse_uint(value(), "--seed");
        } else if (a == "--rate-error") {
            o.rate_error = parse_double(value(), "--rate-error");
            if (std::fabs(o.rate_error) >= 50) usage("--rate-error is a percentage below 50");
        } else if (a == "--bad-stop") {
            o.bad_stop = static_cast<int64_t>(parse_uint(value(), "--bad-stop"));
        } else if (a == "--settle-cycles") {
            o.settle = parse_uint(value(), "--settle-cycles");
        } else if (a == "--link") {
            o.link = value();
        } else {
            usage(("unknown option " + a).c_str());
        }
    }
    if (o.mode == "file") {
        if (!o.max_cycles) o.max_cycles = 100000000;
        if (o.in_path.empty() || o.out_path.empty() || !o.expect_set) usage("file mode needs --in, --out and --expect");
        if (o.lockstep && !o.frame_in) usage("--lockstep needs --frame");
    }
    return o;
}

std::vector<uint8_t> read_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::fprintf(stderr, "tb_uart: cannot read %s: %s\n", path.c_str(), std::strerror(errno));
        std::exit(1);
    }
    std::vector<uint8_t> data;
    uint8_t buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

void write_file(const std::string& path, const std::vector<uint8_t>& data) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size() || std::fclose(f)) {
        std::fprintf(stderr, "tb_uart: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
        std::exit(1);
    }
}

std::string json_list(const std::vector<int64_t>& values) {
    std::string s = "[";
    for (size_t i = 0; i < values.size(); ++i) s += (i ? "," : "") + std::to_string(values[i]);
    return s + "]";
}

void reset(Board& board) {
    for (uint64_t i = 0; i < kResetCycles; ++i) board.tick(1, true);
}

int run_file(const Options& o) {
    std::vector<uint8_t> input = read_file(o.in_path);
    if (o.frame_in && input.size() % o.frame_in) usage("the input is not a whole number of --frame input sizes");
    Board board;
    LineDriver driver(kCpb * (1 + o.rate_error / 100), o.gap_min, o.gap_max, o.seed);
    LineDecoder decoder;
    reset(board);
    driver.hold_until(board.cycle() + 2 * kCpb);  // the line idles for a while after reset, as after power-up

    // Without lockstep every byte is queued at once; with it, one frame at a time.
    size_t queued = 0;
    auto queue_upto = [&](size_t end) {
        for (; queued < end && queued < input.size(); ++queued)
            driver.push(input[queued], static_cast<int64_t>(queued) == o.bad_stop);
    };
    queue_upto(o.lockstep ? o.frame_in : input.size());

    std::vector<uint8_t> received;
    std::vector<int64_t> frame_start, frame_done;
    size_t started = 0;
    int rx = 1;
    uint64_t settle_end = 0, done_cycle = 0;
    bool expected_reached = o.expect == 0;
    if (expected_reached) settle_end = board.cycle() + o.settle;
    while (true) {
        if (expected_reached && board.cycle() >= settle_end) break;
        if (board.cycle() >= o.max_cycles) break;
        bool start = false;
        rx = driver.level(board.cycle(), &start);
        if (start) {
            if (o.frame_in && started % o.frame_in == 0) frame_start.push_back(static_cast<int64_t>(board.cycle()));
            ++started;
        }
        int tx = board.tick(rx, false);
        uint8_t byte;
        if (decoder.sample(board.cycle(), tx, &byte)) {
            received.push_back(byte);
            if (o.frame_out && received.size() % o.frame_out == 0) {
                frame_done.push_back(static_cast<int64_t>(board.cycle()));
                if (o.lockstep) queue_upto(queued + o.frame_in);
            }
            if (!expected_reached && received.size() >= o.expect) {
                expected_reached = true;
                done_cycle = board.cycle();
                settle_end = done_cycle + o.settle;
            }
        }
    }
    std::vector<int64_t> frame_cycles;
    for (size_t i = 0; i < frame_done.size() && i < frame_start.size(); ++i)
        frame_cycles.push_back(frame_done[i] - frame_start[i]);
    write_file(o.out_path, received);
    bool timeout = !expected_reached;
    std::printf(
        "{\"sent\": %zu, \"received\": %zu, \"expected\": %llu, \"cycles\": %llu, \"done_cycle\": %llu, "
        "\"timeout\": %s, \"error\": %d, \"error_cycle\": %lld, \"tx_framing_errors\": %llu, \"frame_cycles\": %s}\n",
        started, received.size(), static_cast<unsigned long long>(o.expect),
        static_cast<unsigned long long>(board.cycle()), static_cast<unsigned long long>(done_cycle),
        timeout ? "true" : "false", board.error_seen() ? 1 : 0,
        static_cast<long long>(board.error_cycle()), static_cast<unsigned long long>(decoder.framing_errors()),
        json_list(frame_cycles).c_str());
    std::fflush(stdout);
    return timeout ? 2 : 0;
}

int open_pty(std::string* path, int* slave) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) return -1;
    const char* name = ptsname(master);
    if (!name) return -1;
    *path = name;
    // Our own handle on the terminal side keeps the pty alive while the host opens and closes it (reads on the
    // master fail with EIO when no one has the other side open), and lets us switch it to raw bytes: no echo,
    // no line editing, no CR/LF translation, before the host has even opened it.
    *slave = open(name, O_RDWR | O_NOCTTY);
    if (*slave < 0) return -1;
    termios tio{};
    if (tcgetattr(*slave, &tio)) return -1;
    cfmakeraw(&tio);
    if (tcsetattr(*slave, TCSANOW, &tio)) return -1;
    if (fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)) return -1;
    return master;
}

int run_pty(const Options& o) {
    std::string path;
    int slave = -1;
    int master = open_pty(&path, &slave);
    if (master < 0) {
        std::fprintf(stderr, "tb_uart: cannot open a pseudo-terminal: %s\n", std::strerror(errno));
        return 1;
    }
    if (!o.link.empty()) {
        unlink(o.link.c_str());
        if (symlink(path.c_str(), o.link.c_str())) {
            std::fprintf(stderr, "tb_uart: cannot link %s: %s\n", o.link.c_str(), std::strerror(errno));
            return 1;
        }
    }
    std::printf("%s\n", path.c_str());
    std::fflush(stdout);

    Board board;
    LineDriver driver(kCpb, 0, 0, 1);
    LineDecoder decoder;
    reset(board);
    std::deque<uint8_t> to_host;
    uint64_t from_host_count = 0, to_host_count = 0, last_activity = board.cycle();
    bool error_reported = false;
    // After this many cycles with both lines quiet the design is presumably waiting for the host: wait for
    // bytes in poll() rather than spin, but still run a slice of cycles per wake-up for slow internal work.
    const uint64_t quiet_cycles = 100ull * 10 * kCpb;
    const uint64_t slice = 8192;
    while (!g_stop && (!o.max_cycles || board.cycle() < o.max_cycles)) {
        bool quiet = driver.idle() && decoder.idle() && to_host.empty() &&
                     board.cycle() - last_activity > quiet_cycles;
        if (quiet) {
            pollfd p{master, POLLIN, 0};
            poll(&p, 1, 2);
        }
        uint8_t buf[4096];
        if (driver.queued() < sizeof buf) {
            ssize_t n = read(master, buf, sizeof buf);
            for (ssize_t i = 0; i < n; ++i) driver.push(buf[i], false);
            if (n > 0) from_host_count += static_cast<uint64_t>(n);
        }
        for (uint64_t i = 0; i < slice; ++i) {
            bool start = false;
            int tx = board.tick(driver.level(board.cycle(), &start), false);
            uint8_t byte;
            if (decoder.sample(board.cycle(), tx, &byte)) to_host.push_back(byte);
            if (!driver.idle() || !decoder.idle()) last_activity = board.cycle();
        }
        while (!to_host.empty()) {
            size_t n = 0;
            for (; n < to_host.size() && n < sizeof buf; ++n) buf[n] = to_host[n];
            ssize_t written = write(master, buf, n);
            if (written <= 0) break;  // the host is not reading: keep the bytes, as the adapter's buffer would
            to_host.erase(to_host.begin(), to_host.begin() + written);
            to_host_count += static_cast<uint64_t>(written);
        }
        if (board.error_seen() && !error_reported) {
            error_reported = true;
            std::printf("{\"event\": \"error\", \"cycle\": %lld}\n", static_cast<long long>(board.error_cycle()));
            std::fflush(stdout);
        }
    }
    if (!o.link.empty()) unlink(o.link.c_str());
    std::printf("{\"cycles\": %llu, \"error\": %d, \"error_cycle\": %lld, \"from_host\": %llu, \"to_host\": %llu, "
                "\"tx_framing_errors\": %llu}\n",
                static_cast<unsigned long long>(board.cycle()), board.error_seen() ? 1 : 0,
                static_cast<long long>(board.error_cycle()), static_cast<unsigned long long>(from_host_count),
                static_cast<unsigned long long>(to_host_count),
                static_cast<unsigned long long>(decoder.framing_errors()));
    std::fflush(stdout);
    close(slave);
    close(master);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // do not outlive the program that started us
#endif
    if (o.mode == "file") return run_file(o);
    signal(SIGTERM, on_signal);  // pty mode runs until told to stop, then reports
    signal(SIGINT, on_signal);
    return run_pty(o);
}
