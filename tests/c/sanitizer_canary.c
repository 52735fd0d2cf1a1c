/* The sanitizers' canary (tests/sanitizers.rs): a program with one bug of each kind the
 * sanitizer runs must catch. If a sanitizer stops reporting (a compiler without its runtime,
 * LeakSanitizer unable to run under a preloaded libfaketime), this program passes where it
 * must fail, and so does the test, instead of every C program "passing" unchecked.
 *
 *   sanitizer_canary none       no bug: exits 0
 *   sanitizer_canary leak       loses the only pointer to a heap block (LeakSanitizer)
 *   sanitizer_canary overflow   reads one byte past a heap block (AddressSanitizer)
 *   sanitizer_canary signed     overflows a signed int (UndefinedBehaviorSanitizer)
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

/* Kept where the optimizer cannot see through it. */
static void *volatile sink;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "none";
    /* Linked against the library like every program of the suite. */
    printf("canary %s (libtessera %s)\n", mode, tessera_version());
    fflush(stdout);
    if (strcmp(mode, "leak") == 0) {
        sink = malloc(48);
        sink = NULL;
    } else if (strcmp(mode, "overflow") == 0) {
        char *p = malloc(16);
        if (p == NULL) return 2;
        memset(p, 1, 16);
        sink = p;
        printf("%d\n", ((volatile char *)p)[16 + argc - 2]);
        free(p);
    } else if (strcmp(mode, "signed") == 0) {
        int x = INT_MAX - 2 + argc;
        x += 1;
        printf("%d\n", x);
    } else if (strcmp(mode, "none") != 0) {
        fprintf(stderr, "usage: %s none|leak|overflow|signed\n", argv[0]);
        return 2;
    }
    return 0;
}
