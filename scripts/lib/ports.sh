# shellcheck shell=bash
# free_port: a TCP port that is free now, outside the kernel's ephemeral range (free_port.py says
# why). Source this file.

free_port() {
  python3 "$(dirname "${BASH_SOURCE[0]}")/free_port.py"
}
