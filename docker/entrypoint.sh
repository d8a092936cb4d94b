#!/bin/bash
# Entry point of the bnnflow + FINN image: puts the host's Xilinx tools on the path when they are mounted (as
# FINN's finn_entrypoint.sh does), then runs bnnflow with the container's arguments.
set -euo pipefail

if [[ -n "${FINN_XILINX_PATH:-}" ]]; then
    export VIVADO_PATH="${FINN_XILINX_PATH}/Vivado/${FINN_XILINX_VERSION}"
    export HLS_PATH="${FINN_XILINX_PATH}/Vitis_HLS/${FINN_XILINX_VERSION}"
    export VITIS_PATH="${FINN_XILINX_PATH}/Vitis/${FINN_XILINX_VERSION}"
    for tool in "$VIVADO_PATH" "$HLS_PATH"; do
        if [[ -f "$tool/settings64.sh" ]]; then
            # shellcheck disable=SC1091
            source "$tool/settings64.sh"
        else
            echo "bnnflow: $tool/settings64.sh not found; check FINN_XILINX_PATH and FINN_XILINX_VERSION" >&2
        fi
    done
    export XILINX_VIVADO="$VIVADO_PATH"
fi
mkdir -p "$FINN_BUILD_DIR"
exec bnnflow "$@"
