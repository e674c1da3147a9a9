/* fuzz_rpc.c - libFuzzer target: msgpack-RPC framing (rec_rpc_next) and the
 * bounded pre-scan (rec_value_scan). The harness is fuzz_rpc_body.h, which the
 * corpus regression test runs too. Build and run with tests/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_rpc_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_rpc_one(data, size);
    return 0;
}
