/*
 * stub_tessera.c: what an attacker swaps in for libtessera: every call answers OK.
 * Decrypt "succeeds" by passing its input through, the best a library without the
 * product key can do. tests/examples.rs runs the protected app on it.
 */
#include <string.h>

#include "tessera.h"

enum tessera_status tessera_open_options_init(struct tessera_open_options *options, size_t options_size) {
    (void)options_size;
    if (options) {
        memset(options, 0, sizeof *options);
        options->struct_size = sizeof *options;
    }
    return TESSERA_OK;
}

enum tessera_status tessera_open(const struct tessera_open_options *options, tessera_session *out) {
    (void)options;
    *out = 1;
    return TESSERA_OK;
}

enum tessera_status tessera_close(tessera_session session) {
    (void)session;
    return TESSERA_OK;
}

enum tessera_status tessera_acquire(tessera_session session, uint32_t product_code, uint32_t features,
                                    uint32_t flags, tessera_seat *out) {
    (void)session, (void)product_code, (void)features, (void)flags;
    *out = 1;
    return TESSERA_OK;
}

enum tessera_status tessera_release(tessera_seat seat) {
    (void)seat;
    return TESSERA_OK;
}

enum tessera_status tessera_decrypt(tessera_seat seat, uint32_t flags, const uint8_t *input,
                                    size_t input_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    (void)seat, (void)flags;
    size_t n = input_len < out_cap ? input_len : out_cap;
    if (out) memcpy(out, input, n);
    *out_len = n;
    return TESSERA_OK;
}

const char *tessera_status_str(int32_t status) {
    (void)status;
    return "ok";
}

const char *tessera_last_error(void) { return ""; }
