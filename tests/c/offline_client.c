/*
 * offline_client.c: a protected app that holds a network seat of the demo product and
 * encrypts and decrypts (both modes) and asks tessera_seat_info in a loop, through the C ABI,
 * while tests/offline.rs stops its license server (tests/offline.rs runs it).
 *
 * The server comes from TESSERA_SERVERS, the state from TESSERA_HOME. It prints "SEAT ok"
 * once it holds the seat (or "SEAT <status>"), then loops. Commands on stdin, one a line:
 *   r   print "OPS <operations> ERRORS <failed operations> INFO <seat_info answers>
 *       INFO_ERRORS <failed seat_info calls> SERVER <server name>"; the first failure is
 *       printed as "ERROR <status number> <detail>" when it happens
 *   q   print the same and exit
 * With the argument "until-lost" it stops at the first failure instead, then tries each call
 * once more and prints "LOST first=<status> encrypt=<status> decrypt_direct=<status>
 * decrypt_derived=<status> info=<status> ops=<operations before>" (status numbers), and
 * exits.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static unsigned long ops = 0, errors = 0, infos = 0, info_errors = 0;
static char server[TESSERA_SERIAL_MAX] = "";

static void report(void) {
    printf("OPS %lu ERRORS %lu INFO %lu INFO_ERRORS %lu SERVER %s\n", ops, errors, infos,
           info_errors, server);
    fflush(stdout);
}

/* One round trip of `len` bytes in `mode`: encrypt, decrypt, compare. */
static tessera_status round_trip(tessera_seat seat, uint32_t mode, size_t len, uint8_t *ct,
                                 size_t *ct_len) {
    uint8_t plain[256], back[256];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) plain[i] = (uint8_t)(i * 7 + ops);
    tessera_status st =
        tessera_encrypt(seat, mode, plain, len, ct, len + TESSERA_CIPHERTEXT_OVERHEAD, ct_len);
    if (st != TESSERA_OK) return st;
    st = tessera_decrypt(seat, 0, ct, *ct_len, back, sizeof back, &n);
    if (st != TESSERA_OK) return st;
    if (n != len || memcmp(plain, back, len) != 0) return TESSERA_E_INTERNAL;
    return TESSERA_OK;
}

static tessera_status info(tessera_seat seat) {
    tessera_seat_details d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    tessera_status st = tessera_seat_info(seat, &d);
    if (st == TESSERA_OK) {
        if (d.seats_in_use < 1 || d.server[0] == '\0') return TESSERA_E_INTERNAL;
        memcpy(server, d.server, sizeof server);
    }
    return st;
}

int main(int argc, char **argv) {
    int until_lost = argc > 1 && strcmp(argv[1], "until-lost") == 0;
    tessera_session s = open_demo_on(TESSERA_SOURCE_NETWORK);
    tessera_seat seat = 0;
    tessera_status st = tessera_acquire(s, 1, 0, 0, &seat);
    if (st != TESSERA_OK) {
        printf("SEAT %d %s\n", (int)st, tessera_last_error());
        return 1;
    }
    printf("SEAT ok\n");
    fflush(stdout);
    uint8_t direct_ct[256 + TESSERA_CIPHERTEXT_OVERHEAD], derived_ct[256 + TESSERA_CIPHERTEXT_OVERHEAD];
    size_t direct_len = 0, derived_len = 0;
    int reported = 0;
    for (;;) {
        tessera_status a = round_trip(seat, TESSERA_CRYPT_DIRECT, 16, direct_ct, &direct_len);
        tessera_status b = round_trip(seat, TESSERA_CRYPT_DERIVED, 200, derived_ct, &derived_len);
        tessera_status c = info(seat);
        tessera_status first = a != TESSERA_OK ? a : b != TESSERA_OK ? b : c;
        if (first != TESSERA_OK && until_lost) {
            uint8_t pt[256], ct[64 + TESSERA_CIPHERTEXT_OVERHEAD];
            size_t n = 0;
            tessera_status e =
                tessera_encrypt(seat, TESSERA_CRYPT_DERIVED, pt, 64, ct, sizeof ct, &n);
            tessera_status dd = tessera_decrypt(seat, 0, direct_ct, direct_len, pt, sizeof pt, &n);
            tessera_status dv =
                tessera_decrypt(seat, 0, derived_ct, derived_len, pt, sizeof pt, &n);
            tessera_status i = info(seat);
            printf("LOST first=%d encrypt=%d decrypt_direct=%d decrypt_derived=%d info=%d "
                   "ops=%lu\n",
                   (int)first, (int)e, (int)dd, (int)dv, (int)i, ops);
            fflush(stdout);
            break;
        }
        if (a != TESSERA_OK || b != TESSERA_OK) {
            errors++;
        } else {
            ops += 2;
        }
        if (c != TESSERA_OK) {
            info_errors++;
        } else {
            infos++;
        }
        if (first != TESSERA_OK && !reported) {
            reported = 1;
            printf("ERROR %d %s\n", (int)first, tessera_last_error());
            fflush(stdout);
        }
        /* The pause between rounds, listening for a command. */
        struct pollfd p = {.fd = 0, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, 2) > 0) {
            char line[16];
            if (fgets(line, sizeof line, stdin) == NULL || line[0] == 'q') {
                report();
                break;
            }
            if (line[0] == 'r') report();
        }
    }
    tessera_release(seat);
    tessera_close(s);
    return 0;
}
