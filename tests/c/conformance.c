/*
 * conformance.c: the C API as a C compiler sees it. Bad arguments, handles and buffers
 * from real C, with pthreads, built with -Werror and run under AddressSanitizer by
 * tests/quickstart.rs. Needs TESSERA_HOME with the demo publisher's product 1 activated.
 * Exits 0 when every check passes; prints each failed check.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tessera.h"

static tessera_session open_demo(void) { return open_demo_on(0); }

static void *worker(void *arg) {
    tessera_session s = *(tessera_session *)arg;
    uint8_t msg[300], ct[300 + TESSERA_CIPHERTEXT_OVERHEAD], pt[sizeof ct];
    for (int i = 0; i < 50; i++) {
        tessera_seat seat = 0;
        size_t n = 0, m = 0;
        memset(msg, i, sizeof msg);
        EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_OK);
        EXPECT(tessera_encrypt(seat, (uint32_t)(i & 1), msg, sizeof msg, ct, sizeof ct, &n) == TESSERA_OK);
        EXPECT(tessera_decrypt(seat, 0, ct, n, pt, sizeof pt, &m) == TESSERA_OK);
        EXPECT(m == sizeof msg && memcmp(pt, msg, m) == 0);
        EXPECT(tessera_release(seat) == TESSERA_OK);
    }
    return NULL;
}

int main(void) {
    tessera_open_options o;
    tessera_session s = 0;
    tessera_seat seat = 0, other = 0;
    size_t n = 0;
    uint8_t buf[256];

    /* Versions and strings. */
    EXPECT(tessera_abi_version() == TESSERA_ABI_VERSION);
    EXPECT(strcmp(tessera_version(), TESSERA_VERSION_STRING) == 0);
    EXPECT(strcmp(tessera_status_str(TESSERA_OK), "ok") == 0);
    EXPECT(strcmp(tessera_status_str(12345), "unknown status") == 0);
    EXPECT(tessera_last_error() != NULL);

    /* NULLs and bad options. */
    EXPECT(tessera_open_options_init(NULL, sizeof o) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_open_options_init(&o, 8) == TESSERA_E_INVALID_ARGUMENT); /* not a struct size */
    EXPECT(tessera_open(NULL, &s) == TESSERA_E_INVALID_ARGUMENT);
    {
        /* An app built against a newer, larger header: the library writes exactly its
         * size, zeroing the fields it does not know, and nothing past it. */
        _Alignas(tessera_open_options) unsigned char bigger[sizeof o + 16 + 8];
        memset(bigger, 0xAB, sizeof bigger);
        EXPECT(tessera_open_options_init((tessera_open_options *)bigger, sizeof o + 16) == TESSERA_OK);
        EXPECT(((tessera_open_options *)bigger)->struct_size == sizeof o + 16);
        int tail_zero = 1, guard_kept = 1;
        for (size_t i = sizeof o; i < sizeof o + 16; i++) tail_zero &= bigger[i] == 0;
        for (size_t i = sizeof o + 16; i < sizeof bigger; i++) guard_kept &= bigger[i] == 0xAB;
        EXPECT(tail_zero);
        EXPECT(guard_kept);
    }
    EXPECT(tessera_open_options_init(&o, sizeof o) == TESSERA_OK);
    EXPECT(o.struct_size == sizeof o);
    EXPECT(tessera_open(&o, &s) == TESSERA_E_INVALID_ARGUMENT); /* vendor 0, no key */
    o.vendor_id = 0x7E55;
    o.publisher_key = DEMO_KEY;
    o.publisher_key_len = 31;
    EXPECT(tessera_open(&o, &s) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(s == 0);

    s = open_demo();
    EXPECT(tessera_acquire(s, 1, 0, 0, NULL) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_acquire(s, 424242, 0, 0, &seat) == TESSERA_E_NO_LICENSE);
    EXPECT(tessera_acquire(s, 1, 0x100, 0, &seat) == TESSERA_E_FEATURE_MISSING);
    EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_OK);

    /* Buffers: size query, too small, garbage ciphertext. */
    EXPECT(tessera_encrypt(seat, TESSERA_CRYPT_DERIVED, (const uint8_t *)"abc", 3, NULL, 0, &n) == TESSERA_E_BUFFER_TOO_SMALL);
    EXPECT(n == 3 + TESSERA_CIPHERTEXT_OVERHEAD);
    EXPECT(tessera_encrypt(seat, TESSERA_CRYPT_DIRECT, (const uint8_t *)"abc", 3, buf, 10, &n) == TESSERA_E_BUFFER_TOO_SMALL);
    EXPECT(tessera_encrypt(seat, 99, (const uint8_t *)"abc", 3, buf, sizeof buf, &n) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_encrypt(seat, 0, NULL, 0, buf, sizeof buf, &n) == TESSERA_OK && n == TESSERA_CIPHERTEXT_OVERHEAD);
    memset(buf, 0xA5, sizeof buf);
    EXPECT(tessera_decrypt(seat, 0, buf, sizeof buf, buf, sizeof buf, &n) == TESSERA_E_TAMPERED);
    EXPECT(tessera_decrypt(seat, 0, buf, 3, buf, sizeof buf, &n) == TESSERA_E_TAMPERED);

    /* Handles: forged, released, wrong kind. */
    EXPECT(tessera_release(0) == TESSERA_E_INVALID_HANDLE);
    EXPECT(tessera_release(seat + 1) == TESSERA_E_INVALID_HANDLE);
    EXPECT(tessera_close(seat) == TESSERA_E_INVALID_HANDLE);
    EXPECT(tessera_acquire(seat, 1, 0, 0, &other) == TESSERA_E_INVALID_HANDLE);
    tessera_seat_details info;
    memset(&info, 0, sizeof info);
    EXPECT(tessera_seat_info(seat, &info) == TESSERA_E_INVALID_ARGUMENT); /* struct_size 0 */
    info.struct_size = sizeof info;
    EXPECT(tessera_seat_info(seat, &info) == TESSERA_OK && info.product_code == 1);
    EXPECT(tessera_release(seat) == TESSERA_OK);
    EXPECT(tessera_release(seat) == TESSERA_E_INVALID_HANDLE);
    EXPECT(tessera_seat_info(seat, &info) == TESSERA_E_INVALID_HANDLE);

    /* Threads sharing one session. */
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, &s);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);

    /* Close releases held seats. */
    EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_OK);
    EXPECT(tessera_close(s) == TESSERA_OK);
    EXPECT(tessera_release(seat) == TESSERA_E_INVALID_HANDLE);
    EXPECT(tessera_close(s) == TESSERA_E_INVALID_HANDLE);

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
