// Verilator testbench for bnnflow_accel: streams input beats in, collects output beats, counts cycles.
//
// Usage: Vbnnflow_accel IN_HEX OUT_HEX IN_BYTES OUT_BYTES OUT_BEATS SEED P_VALID P_READY MAX_CYCLES
//   IN_HEX      input beats, one per line, hex (most significant digit first)
//   OUT_HEX     written: one output beat per line, then the cycle each was taken, as "beat cycle"
//   P_VALID     probability that the source offers a beat in a cycle (1 = always)
//   P_READY     probability that the sink takes a beat in a cycle (1 = never back-pressures)
// A beat offered stays offered, unchanged, until it is taken (valid/ready rules). Exit 0 when OUT_BEATS beats
// arrived, 2 when MAX_CYCLES passed first, 1 on bad arguments.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "Vbnnflow_accel.h"
#include "verilated.h"

using Beat = std::vector<uint8_t>;

template <typename T>
static void put(T& port, const Beat& beat) {
    uint64_t value = 0;
    for (size_t i = 0; i < beat.size() && i < 8; ++i) value |= static_cast<uint64_t>(beat[i]) << (8 * i);
    port = static_cast<T>(value);
}

template <std::size_t N>
static void put(VlWide<N>& port, const Beat& beat) {
    for (std::size_t w = 0; w < N; ++w) {
        uint32_t value = 0;
        for (std::size_t b = 0; b < 4; ++b) {
            std::size_t i = w * 4 + b;
            if (i < beat.size()) value |= static_cast<uint32_t>(beat[i]) << (8 * b);
        }
        port[w] = value;
    }
}

template <typename T>
static Beat get(const T& port, std::size_t bytes) {
    Beat beat(bytes);
    uint64_t value = static_cast<uint64_t>(port);
    for (std::size_t i = 0; i < bytes; ++i) beat[i] = static_cast<uint8_t>(value >> (8 * i));
    return beat;
}

template <std::size_t N>
static Beat get(const VlWide<N>& port, std::size_t bytes) {
    Beat beat(bytes);
    for (std::size_t i = 0; i < bytes; ++i) beat[i] = static_cast<uint8_t>(port[i / 4] >> (8 * (i % 4)));
    return beat;
}

static Beat parse_hex(const std::string& line, std::size_t bytes) {
    Beat beat(bytes, 0);
    std::size_t digits = line.size();
    for (std::size_t i = 0; i < bytes; ++i) {  // byte i is the two digits ending 2*i from the right
        if (2 * i + 1 > digits) break;
        std::size_t end = digits - 2 * i;
        std::size_t start = end >= 2 ? end - 2 : 0;
        beat[i] = static_cast<uint8_t>(std::stoul(line.substr(start, end - start), nullptr, 16));
    }
    return beat;
}

int main(int argc, char** argv) {
    if (argc != 10) {
        std::fprintf(stderr, "usage: %s IN_HEX OUT_HEX IN_BYTES OUT_BYTES OUT_BEATS SEED P_VALID P_READY MAX_CYCLES\n",
                     argv[0]);
        return 1;
    }
    const std::size_t in_bytes = std::stoul(argv[3]), out_bytes = std::stoul(argv[4]);
    const uint64_t out_beats = std::stoull(argv[5]), max_cycles = std::stoull(argv[9]);
    std::mt19937_64 rng(std::stoull(argv[6]));
    std::bernoulli_distribution offer(std::stod(argv[7])), take(std::stod(argv[8]));

    std::vector<Beat> inputs;
    std::ifstream in(argv[1]);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) inputs.push_back(parse_hex(line, in_bytes));

    VerilatedContext context;
    Vbnnflow_accel top(&context);
    top.clk = 0;
    top.rst = 1;
    top.in_valid = 0;
    top.out_ready = 0;
    for (int i = 0; i < 4; ++i) {
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
    }
    top.rst = 0;

    std::FILE* out = std::fopen(argv[2], "w");
    if (!out) {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    std::size_t next = 0;
    uint64_t received = 0, cycle = 0;
    bool offered = false;
    for (; cycle < max_cycles && received < out_beats; ++cycle) {
        top.clk = 0;
        if (!offered && next < inputs.size() && offer(rng)) {
            put(top.in_data, inputs[next]);
            offered = true;
        }
        top.in_valid = offered;
        top.out_ready = take(rng);
        top.eval();
        const bool in_fire = top.in_valid && top.in_ready;
        const bool out_fire = top.out_valid && top.out_ready;
        if (out_fire) {
            Beat beat = get(top.out_data, out_bytes);
            for (std::size_t i = beat.size(); i-- > 0;) std::fprintf(out, "%02x", beat[i]);
            std::fprintf(out, " %llu\n", static_cast<unsigned long long>(cycle));
            ++received;
        }
        top.clk = 1;
        top.eval();
        if (in_fire) {
            offered = false;
            ++next;
        }
    }
    std::fclose(out);
    std::printf("cycles %llu inputs %zu outputs %llu\n", static_cast<unsigned long long>(cycle), next,
                static_cast<unsigned long long>(received));
    top.final();
    return received < out_beats ? 2 : 0;
}
