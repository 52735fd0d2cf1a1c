/*
 * check.h: what the C checks of the suite share (tests/c/conformance.c, tests/c/abi.c): the
 * demo publisher's key, the EXPECT counter, and a session of the demo publisher.
 */
#ifndef TESSERA_TEST_CHECK_H
#define TESSERA_TEST_CHECK_H

#include <stdio.h>

#include "tessera.h"

static const uint8_t DEMO_KEY[TESSERA_PUBLISHER_KEY_LEN] = {
    0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5, 0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
    0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e, 0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
};

static int failures = 0, checks = 0;

#define EXPECT(cond)                                                                   \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,   \
                   tessera_last_error());                                              \
        }                                                                              \
    } while (0)

/* A session of the demo publisher (vendor 0x7E55) on `sources` (0: all). */
static inline tessera_session open_demo_on(uint32_t sources) {
    tessera_open_options o;
    tessera_session s = 0;
    EXPECT(tessera_open_options_init(&o, sizeof o) == TESSERA_OK);
    o.vendor_id = 0x7E55;
    o.publisher_key = DEMO_KEY;
    o.publisher_key_len = sizeof DEMO_KEY;
    o.sources = sources;
    EXPECT(tessera_open(&o, &s) == TESSERA_OK);
    return s;
}

#endif
