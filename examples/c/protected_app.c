/*
 * protected_app.c: an app whose valuable part is data only a seat can open.
 *
 * Licence checks that end in "if (status == OK)" are one patched jump, or one stub library
 * that answers OK to everything, away from being gone. This app holds nothing worth taking:
 * its price table ships encrypted with the product's key (tessera-vendor encrypt-file), and
 * that key never leaves the container holding the license. The app asks the runtime to
 * decrypt the table for a held seat, and works with what comes back. A stub library that
 * answers OK gives it no table; a patched binary gives it no table; only a container with
 * the license does.
 *
 * Usage: protected_app RATES.tsx ITEM QUANTITY
 *   RATES.tsx: lines "item price-in-cents", encrypted for the demo publisher's product 1:
 *     tessera-vendor encrypt-file --key demo.key --product 1 rates.txt rates.tsx
 * Prints the price of QUANTITY of ITEM. Exit 0 on success, 1 when the data can't be used,
 * 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

#define DEMO_VENDOR_ID 0x7E55u
#define DEMO_PRODUCT_CODE 1u
#define MAX_FILE (1u << 20)

/* The demo publisher's Ed25519 public key (tessera-vendor keygen --demo). */
static const uint8_t PUBLISHER_KEY[TESSERA_PUBLISHER_KEY_LEN] = {
    0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5,
    0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
    0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e,
    0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
};

static int fail(const char *what, tessera_status st) {
    fprintf(stderr, "protected_app: %s: %s (%d): %s\n", what, tessera_status_str(st), (int)st,
            tessera_last_error());
    return 0;
}

/* Reads a whole file (at most MAX_FILE bytes) into a new buffer. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    uint8_t *buf = malloc(MAX_FILE);
    size_t n = buf ? fread(buf, 1, MAX_FILE, f) : 0;
    int too_big = buf && n == MAX_FILE && fgetc(f) != EOF;
    fclose(f);
    if (buf == NULL || too_big || n == 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Decrypts the table with the seat's product key. Returns a NUL-terminated buffer, or NULL.
 * The plaintext buffer starts zeroed, so whatever a library that did not decrypt leaves in
 * it is an empty table, never leftovers. */
static char *open_table(tessera_seat seat, const uint8_t *ct, size_t ct_len) {
    size_t pt_len = 0;
    char *pt = calloc(1, ct_len + 1);
    if (pt == NULL) return NULL;
    tessera_status st = tessera_decrypt(seat, 0, ct, ct_len, (uint8_t *)pt, ct_len, &pt_len);
    if (st != TESSERA_OK) {
        fail("decrypting the price table", st);
        free(pt);
        return NULL;
    }
    if (pt_len > ct_len) pt_len = ct_len; /* never trust a length beyond the buffer */
    pt[pt_len] = '\0';
    return pt;
}

/* Looks `item` up in the table: lines "name cents". Returns 1 and the price when found. */
static int price_of(char *table, const char *item, long *cents) {
    for (char *line = strtok(table, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[64];
        long price;
        if (sscanf(line, "%63s %ld", name, &price) == 2 && strcmp(name, item) == 0) {
            *cents = price;
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s RATES.tsx ITEM QUANTITY\n", argv[0]);
        return 2;
    }
    long quantity = strtol(argv[3], NULL, 10);
    if (quantity <= 0 || quantity > 1000000) {
        fprintf(stderr, "protected_app: QUANTITY must be 1 to 1000000\n");
        return 2;
    }
    size_t ct_len = 0;
    uint8_t *ct = read_file(argv[1], &ct_len);
    if (ct == NULL) {
        fprintf(stderr, "protected_app: cannot read %s\n", argv[1]);
        return 1;
    }

    tessera_open_options opts;
    tessera_session session = 0;
    tessera_seat seat = 0;
    char *table = NULL;
    int ok = 0;
    long cents = 0;

    if (tessera_open_options_init(&opts, sizeof opts) != TESSERA_OK) goto out;
    opts.vendor_id = DEMO_VENDOR_ID;
    opts.publisher_key = PUBLISHER_KEY;
    opts.publisher_key_len = sizeof PUBLISHER_KEY;
    tessera_status st = tessera_open(&opts, &session);
    if (st != TESSERA_OK) {
        fail("open", st);
        goto out;
    }
    st = tessera_acquire(session, DEMO_PRODUCT_CODE, 0x1, 0, &seat);
    if (st != TESSERA_OK) {
        fail("acquire", st);
        goto out;
    }

    table = open_table(seat, ct, ct_len);
    if (table == NULL) goto out;
    if (!price_of(table, argv[2], &cents)) {
        fprintf(stderr, "protected_app: no price for \"%s\" in the table\n", argv[2]);
        goto out;
    }
    printf("%ld x %s = %ld.%02ld\n", quantity, argv[2], quantity * cents / 100, quantity * cents % 100);
    ok = 1;
out:
    free(table);
    free(ct);
    if (seat) tessera_release(seat);
    if (session) tessera_close(session);
    return ok ? 0 : 1;
}
