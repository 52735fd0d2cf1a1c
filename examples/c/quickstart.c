/*
 * quickstart.c: a protected app in C, end to end.
 *
 * Opens the Tessera runtime for a publisher, acquires a seat of a product, encrypts and
 * decrypts a message with the product's key (derived mode, then direct mode), shows the
 * seat, releases it and closes. Prints each step and any status in words.
 *
 * It uses the built-in demo publisher (vendor 0x7E55, product 1), whose key is public and
 * protects nothing: `make demo` activates a temporary software container for it and runs
 * this program. A real app compiles in its own publisher key (tessera-vendor keygen prints it).
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude examples/c/quickstart.c -Ltarget/release -ltessera
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

#define DEMO_VENDOR_ID 0x7E55u
#define DEMO_PRODUCT_CODE 1u

/* The demo publisher's Ed25519 public key (tessera-vendor keygen --demo). */
static const uint8_t PUBLISHER_KEY[TESSERA_PUBLISHER_KEY_LEN] = {
    0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5,
    0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
    0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e,
    0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
};

static int check(const char *step, tessera_status st) {
    if (st == TESSERA_OK) {
        printf("%-28s ok\n", step);
        return 1;
    }
    printf("%-28s FAILED: %s (%d): %s\n", step, tessera_status_str(st), (int)st, tessera_last_error());
    return 0;
}

static const char *unit_name(uint32_t unit) {
    switch (unit) {
    case TESSERA_UNIT_STATION: return "station";
    case TESSERA_UNIT_SESSION: return "session";
    case TESSERA_UNIT_PROCESS: return "process";
    case TESSERA_UNIT_HANDLE: return "handle";
    default: return "?";
    }
}

/* Encrypts `msg` in `mode`, decrypts it again and checks the round trip. */
static int round_trip(tessera_seat seat, uint32_t mode, const char *label, const char *msg) {
    size_t msg_len = strlen(msg), ct_len = 0, pt_len = 0;
    char step[64];
    int ok = 0;

    /* Size query: (NULL, 0) asks how big the ciphertext will be. */
    if (tessera_encrypt(seat, mode, (const uint8_t *)msg, msg_len, NULL, 0, &ct_len) != TESSERA_E_BUFFER_TOO_SMALL) {
        printf("size query did not report a size\n");
        return 0;
    }
    uint8_t *ct = malloc(ct_len);
    uint8_t *pt = malloc(ct_len);
    if (ct == NULL || pt == NULL) goto out;

    snprintf(step, sizeof step, "encrypt (%s)", label);
    if (!check(step, tessera_encrypt(seat, mode, (const uint8_t *)msg, msg_len, ct, ct_len, &ct_len))) goto out;
    printf("  %zu bytes of plaintext -> %zu bytes of ciphertext\n", msg_len, ct_len);

    snprintf(step, sizeof step, "decrypt (%s)", label);
    if (!check(step, tessera_decrypt(seat, 0, ct, ct_len, pt, ct_len, &pt_len))) goto out;
    ok = pt_len == msg_len && memcmp(pt, msg, msg_len) == 0;
    printf("  round trip %s: \"%.*s\"\n", ok ? "matches" : "DIFFERS", (int)pt_len, (const char *)pt);

    /* Any change to the ciphertext is caught. */
    ct[ct_len / 2] ^= 0x01;
    tessera_status st = tessera_decrypt(seat, 0, ct, ct_len, pt, ct_len, &pt_len);
    printf("  flipped bit detected: %s\n", st == TESSERA_E_TAMPERED ? "yes" : "NO");
    ok = ok && st == TESSERA_E_TAMPERED;
out:
    free(ct);
    free(pt);
    return ok;
}

int main(void) {
    tessera_open_options opts;
    tessera_session session = 0;
    tessera_seat seat = 0;
    int ok = 0;

    printf("Tessera %s (ABI %u)\n", tessera_version(), tessera_abi_version());
    if (tessera_abi_version() != TESSERA_ABI_VERSION) {
        printf("library ABI %u does not match header ABI %u\n", tessera_abi_version(), TESSERA_ABI_VERSION);
        return 1;
    }

    if (!check("open options init", tessera_open_options_init(&opts, sizeof opts))) return 1;
    opts.vendor_id = DEMO_VENDOR_ID;
    opts.publisher_key = PUBLISHER_KEY;
    opts.publisher_key_len = sizeof PUBLISHER_KEY;
    /* opts.sources stays TESSERA_SOURCE_ALL: a dongle first, then a software container. */
    if (!check("open", tessera_open(&opts, &session))) return 1;

    if (!check("acquire product 1", tessera_acquire(session, DEMO_PRODUCT_CODE, 0x1, 0, &seat))) {
        printf("hint: activate this machine first (see README: tessera activate request/install)\n");
        tessera_close(session);
        return 1;
    }

    tessera_seat_details info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (check("seat info", tessera_seat_info(seat, &info))) {
        printf("  product %u of vendor %#x, features %#x\n", info.product_code, info.vendor_id, info.features);
        printf("  %u of %u seat(s) in use, counted per %s\n", info.seats_in_use, info.quantity, unit_name(info.counting_unit));
        printf("  container %s (%s), expires %s\n", info.container_serial,
               info.container_kind == TESSERA_CONTAINER_SOFTWARE ? "software container"
               : info.transport == TESSERA_TRANSPORT_HID       ? "dongle, HID mode"
               : info.transport == TESSERA_TRANSPORT_MSD       ? "dongle, mass-storage mode"
                                                                 : "dongle, USB",
               info.expiry ? "at a set time" : "never");
        if (info.source == TESSERA_SOURCE_NETWORK)
            printf("  served by license server %s\n", info.server);
    }

    ok = round_trip(seat, TESSERA_CRYPT_DERIVED, "derived mode", "Hello from a protected app")
      && round_trip(seat, TESSERA_CRYPT_DIRECT, "direct mode", "Keys never leave the container");

    ok = check("release", tessera_release(seat)) && ok;
    /* A released handle is refused, never undefined behaviour. */
    printf("  release again -> %s\n", tessera_status_str(tessera_release(seat)));
    ok = check("close", tessera_close(session)) && ok;

    printf("%s\n", ok ? "quickstart: all steps succeeded" : "quickstart: FAILED");
    return ok ? 0 : 1;
}
