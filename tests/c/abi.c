/*
 * abi.c: the C ABI's contract where a careful user probes its edges: in-place and
 * overlapping encryption, handles that must never come back to life, the struct sizes
 * tessera_open accepts, what a failed decrypt leaves in `out`, the last-error rule, an
 * unreadable TESSERA_HOME, a side-effect-free activation request size query, the license
 * list and the acquire that waits for a seat. Built with -Werror and run plain by
 * tests/quickstart.rs, under ASan+LSan and UBSan by tests/sanitizers.rs. Needs TESSERA_HOME with the demo publisher's product 1
 * activated (4 seats per process), and an empty folder it may write in as its argument.
 * Exits 0 when every check passes; prints each failed check.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tessera.h"

static tessera_session open_demo(void) { return open_demo_on(TESSERA_SOURCE_SOFTWARE); }

static double now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec * 1000.0 + tv.tv_usec / 1000.0;
}

#define MSG "in place, as C users expect of an AEAD"

/* 1. In-place and overlapping encryption and decryption, both modes. */
static void in_place(tessera_seat seat) {
    const size_t len = sizeof MSG - 1;
    for (uint32_t mode = 0; mode < 2; mode++) {
        uint8_t buf[256], copy[256], pt[256];
        size_t n = 0, m = 0;
        memset(buf, 0, sizeof buf);
        memcpy(buf, MSG, len);
        /* out == input */
        EXPECT(tessera_encrypt(seat, mode, buf, len, buf, sizeof buf, &n) == TESSERA_OK);
        EXPECT(n == len + TESSERA_CIPHERTEXT_OVERHEAD);
        memcpy(copy, buf, n);
        EXPECT(tessera_decrypt(seat, 0, copy, n, pt, sizeof pt, &m) == TESSERA_OK);
        EXPECT(m == len && memcmp(pt, MSG, len) == 0);
        /* in-place decrypt */
        EXPECT(tessera_decrypt(seat, 0, buf, n, buf, sizeof buf, &m) == TESSERA_OK);
        EXPECT(m == len && memcmp(buf, MSG, len) == 0);
        /* partly overlapping, both directions */
        memset(buf, 0, sizeof buf);
        memcpy(buf + 7, MSG, len);
        EXPECT(tessera_encrypt(seat, mode, buf + 7, len, buf, sizeof buf, &n) == TESSERA_OK);
        EXPECT(tessera_decrypt(seat, 0, buf, n, buf + 3, sizeof buf - 3, &m) == TESSERA_OK);
        EXPECT(m == len && memcmp(buf + 3, MSG, len) == 0);
        /* a tampered in-place decrypt leaves the ciphertext as it was */
        memcpy(buf, copy, n);
        buf[n - 1] ^= 1;
        memcpy(copy, buf, n);
        m = 12345;
        EXPECT(tessera_decrypt(seat, 0, buf, n, buf, sizeof buf, &m) == TESSERA_E_TAMPERED);
        EXPECT(memcmp(buf, copy, n) == 0);
        EXPECT(m == 12345);
        /* a too-small in-place buffer is a size answer and changes nothing */
        memcpy(buf, MSG, len);
        EXPECT(tessera_encrypt(seat, mode, buf, len, buf, len + 3, &n) == TESSERA_E_BUFFER_TOO_SMALL);
        EXPECT(n == len + TESSERA_CIPHERTEXT_OVERHEAD && memcmp(buf, MSG, len) == 0);
    }
}

/* 2. A stale handle never comes back to life, however many seats the slot sees after. */
static void handles(tessera_session s) {
    tessera_seat stale = 0, seat = 0;
    EXPECT(tessera_acquire(s, 1, 0, 0, &stale) == TESSERA_OK);
    EXPECT(tessera_release(stale) == TESSERA_OK);
    int reused = 0, alive = 0;
    for (int i = 0; i < 5000; i++) {
        if (tessera_acquire(s, 1, 0, 0, &seat) != TESSERA_OK) {
            EXPECT(0 && "acquire in the reuse loop");
            break;
        }
        if (seat == stale) reused++;
        tessera_seat_details info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (tessera_seat_info(stale, &info) != TESSERA_E_INVALID_HANDLE) alive++;
        EXPECT(tessera_release(seat) == TESSERA_OK);
    }
    EXPECT(reused == 0);
    EXPECT(alive == 0);
    EXPECT(tessera_release(stale) == TESSERA_E_INVALID_HANDLE);
}

/* 3. The contract's gaps, settled. */
static void contract(tessera_session s, tessera_seat seat) {
    /* tessera_open takes the sizes tessera_open_options_init takes, no smaller. */
    tessera_open_options o;
    EXPECT(tessera_open_options_init(&o, sizeof o) == TESSERA_OK);
    o.vendor_id = 0x7E55;
    o.publisher_key = DEMO_KEY;
    o.publisher_key_len = sizeof DEMO_KEY;
    for (uint32_t size = 24; size < sizeof o; size++) {
        tessera_session t = 77;
        o.struct_size = size;
        EXPECT(tessera_open(&o, &t) == TESSERA_E_INVALID_ARGUMENT && t == 77);
        EXPECT(tessera_open_options_init(&o, size) == TESSERA_E_INVALID_ARGUMENT);
    }

    /* seat_info writes back the bytes it filled in. */
    struct {
        tessera_seat_details d;
        uint8_t newer[24];
    } big;
    memset(&big, 0xAB, sizeof big);
    big.d.struct_size = sizeof big;
    EXPECT(tessera_seat_info(seat, &big.d) == TESSERA_OK);
    EXPECT(big.d.struct_size == sizeof(tessera_seat_details));
    EXPECT(big.newer[0] == 0xAB && big.newer[23] == 0xAB);

    /* The empty plaintext: its ciphertext decrypts with (NULL, 0), OK and 0 bytes. */
    uint8_t ct[TESSERA_CIPHERTEXT_OVERHEAD];
    size_t n = 0, m = 99;
    EXPECT(tessera_encrypt(seat, 0, NULL, 0, NULL, 0, &n) == TESSERA_E_BUFFER_TOO_SMALL);
    EXPECT(n == TESSERA_CIPHERTEXT_OVERHEAD);
    EXPECT(tessera_encrypt(seat, 0, NULL, 0, ct, sizeof ct, &n) == TESSERA_OK);
    EXPECT(tessera_decrypt(seat, 0, ct, n, NULL, 0, &m) == TESSERA_OK && m == 0);

    /* A failed authentication leaves zeros in a separate out, never ciphertext. */
    uint8_t msg[40], ct2[40 + TESSERA_CIPHERTEXT_OVERHEAD], out[40];
    memset(msg, 0x5A, sizeof msg);
    EXPECT(tessera_encrypt(seat, 0, msg, sizeof msg, ct2, sizeof ct2, &n) == TESSERA_OK);
    ct2[sizeof ct2 - 1] ^= 0x80;
    memset(out, 0xEE, sizeof out);
    m = 4242;
    EXPECT(tessera_decrypt(seat, 0, ct2, n, out, sizeof out, &m) == TESSERA_E_TAMPERED);
    EXPECT(m == 4242);
    int zeros = 1;
    for (size_t i = 0; i < sizeof out; i++) zeros &= out[i] == 0;
    EXPECT(zeros);
    /* ...and any other failure leaves it untouched. */
    memset(out, 0xEE, sizeof out);
    ct2[sizeof ct2 - 1] ^= 0x80;
    ct2[0] ^= 0xFF; /* the header's magic: not a ciphertext */
    EXPECT(tessera_decrypt(seat, 0, ct2, n, out, sizeof out, &m) != TESSERA_OK);
    EXPECT(out[0] == 0xEE && out[39] == 0xEE);

    /* tessera_last_error: a failure sets it, a success and the string calls leave it. */
    EXPECT(tessera_release(0) == TESSERA_E_INVALID_HANDLE);
    char before[256];
    snprintf(before, sizeof before, "%s", tessera_last_error());
    EXPECT(strstr(before, "handle") != NULL);
    tessera_seat_details info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(tessera_seat_info(seat, &info) == TESSERA_OK);
    (void)tessera_status_str(TESSERA_E_NO_SEAT);
    (void)tessera_version();
    (void)tessera_abi_version();
    EXPECT(strcmp(before, tessera_last_error()) == 0);
    (void)s;
}

/* TESSERA_HOME pointing at a regular file is an I/O failure, not "no license"; an
 * activation request size query changes nothing on disk. Both in a child: they change the
 * process's environment. */
static void homes(const char *scratch) {
    pid_t pid = fork();
    if (pid == 0) {
        char file[512], fresh[512];
        snprintf(file, sizeof file, "%s/home-is-a-file", scratch);
        FILE *f = fopen(file, "w");
        if (f) {
            fputs("not a folder\n", f);
            fclose(f);
        }
        setenv("TESSERA_HOME", file, 1);
        tessera_session s = open_demo();
        tessera_seat seat = 0;
        EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_E_IO);
        EXPECT(seat == 0);
        tessera_close(s);

        snprintf(fresh, sizeof fresh, "%s/fresh-home", scratch);
        setenv("TESSERA_HOME", fresh, 1);
        s = open_demo();
        size_t need = 0, got = 0;
        EXPECT(tessera_activation_request(s, NULL, 0, &need) == TESSERA_E_BUFFER_TOO_SMALL);
        EXPECT(need > 0);
        struct stat st;
        EXPECT(stat(fresh, &st) != 0 && errno == ENOENT); /* nothing was made */
        uint8_t small[8];
        EXPECT(tessera_activation_request(s, small, sizeof small, &got) == TESSERA_E_BUFFER_TOO_SMALL);
        EXPECT(got == need);
        EXPECT(stat(fresh, &st) != 0 && errno == ENOENT);
        uint8_t *req = malloc(need);
        EXPECT(req != NULL && tessera_activation_request(s, req, need, &got) == TESSERA_OK);
        EXPECT(got == need);
        EXPECT(stat(fresh, &st) == 0); /* the writing call made the container */
        free(req);
        tessera_close(s);
        fflush(stdout);
        _exit(failures == 0 ? 0 : 1);
    }
    int status = 0;
    EXPECT(pid > 0 && waitpid(pid, &status, 0) == pid);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* 4a. The license list. */
static void license_list(tessera_session s, tessera_seat seat) {
    size_t count = 0;
    EXPECT(tessera_license_list(s, NULL, 0, sizeof(tessera_license_info), &count) ==
           TESSERA_E_BUFFER_TOO_SMALL);
    EXPECT(count == 1);
    EXPECT(tessera_license_list(s, NULL, 0, 4, &count) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_license_list(s, NULL, 0, sizeof(tessera_license_info), NULL) ==
           TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_license_list(0, NULL, 0, sizeof(tessera_license_info), &count) ==
           TESSERA_E_INVALID_HANDLE);
    /* A newer, larger entry: filled as far as the library knows, the rest zeroed. */
    struct {
        tessera_license_info i;
        uint8_t newer[16];
    } list[3];
    memset(list, 0xAB, sizeof list);
    count = 0;
    EXPECT(tessera_license_list(s, &list[0].i, 3, sizeof list[0], &count) == TESSERA_OK);
    EXPECT(count == 1);
    tessera_license_info *l = &list[0].i;
    EXPECT(l->struct_size == sizeof(tessera_license_info));
    EXPECT(l->vendor_id == 0x7E55 && l->product_code == 1 && l->features == 0xFF);
    EXPECT(l->quantity == 4 && l->seats_in_use == 1); /* the seat this process holds */
    EXPECT(l->source == TESSERA_SOURCE_SOFTWARE && l->counting_unit == TESSERA_UNIT_PROCESS);
    EXPECT(l->container_kind == TESSERA_CONTAINER_SOFTWARE && l->status == TESSERA_OK);
    EXPECT(l->transport == TESSERA_TRANSPORT_NONE && l->server[0] == 0);
    tessera_seat_details d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    EXPECT(tessera_seat_info(seat, &d) == TESSERA_OK);
    EXPECT(strcmp(d.container_serial, l->container_serial) == 0);
    EXPECT(list[0].newer[0] == 0 && list[0].newer[15] == 0);
    EXPECT(((uint8_t *)&list[1])[0] == 0xAB); /* nothing past the entries listed */
    EXPECT((l->flags & TESSERA_LICENSE_BORROWED) == 0 && l->borrowed_until == 0);
    EXPECT((d.flags & TESSERA_SEAT_BORROWED) == 0);
    /* An app built against the first struct (before borrowed_until): filled that far. */
    size_t v1 = offsetof(tessera_license_info, borrowed_until);
    uint8_t old[2 * sizeof(tessera_license_info)];
    memset(old, 0xAB, sizeof old);
    EXPECT(tessera_license_list(s, (tessera_license_info *)(void *)old, 1, v1, &count) == TESSERA_OK);
    uint32_t filled;
    memcpy(&filled, old, sizeof filled);
    EXPECT(filled == v1 && old[v1] == 0xAB);
}

/* 4c. Borrowing: argument and handle checks, nothing borrowed to return, and a server that
 * cannot be reached borrows nothing. In a child: it changes TESSERA_SERVERS. */
static void borrowing(void) {
    pid_t pid = fork();
    if (pid == 0) {
        setenv("TESSERA_SERVERS", "127.0.0.1:9", 1); /* discard port: nothing listens */
        tessera_session s = open_demo();
        uint64_t until = 4242;
        EXPECT(tessera_borrow(s, 1, 0, 3, NULL) == TESSERA_E_INVALID_ARGUMENT);
        EXPECT(tessera_borrow(0, 1, 0, 3, &until) == TESSERA_E_INVALID_HANDLE);
        EXPECT(tessera_borrow(s, 1, 0, 0, &until) == TESSERA_E_INVALID_ARGUMENT);
        EXPECT(tessera_borrow(s, 1, 0, 100000, &until) == TESSERA_E_INVALID_ARGUMENT);
        EXPECT(tessera_borrow(s, 1, 0, 3, &until) == TESSERA_E_IO);
        EXPECT(until == 4242); /* written only on success */
        EXPECT(tessera_return_borrowed(0, 1) == TESSERA_E_INVALID_HANDLE);
        EXPECT(tessera_return_borrowed(s, 1) == TESSERA_E_NO_LICENSE);
        tessera_close(s);
        EXPECT(tessera_borrow(s, 1, 0, 3, &until) == TESSERA_E_INVALID_HANDLE);
        EXPECT(tessera_return_borrowed(s, 1) == TESSERA_E_INVALID_HANDLE);
        fflush(stdout);
        _exit(failures == 0 ? 0 : 1);
    }
    int status = 0;
    EXPECT(pid > 0 && waitpid(pid, &status, 0) == pid);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

struct waiter {
    tessera_session s;
    tessera_status st;
    double took;
};

static void *wait_a_minute(void *arg) {
    struct waiter *w = arg;
    tessera_seat seat = 0;
    double t0 = now_ms();
    w->st = tessera_acquire_wait(w->s, 1, 0, 0, 60000, &seat);
    w->took = now_ms() - t0;
    return NULL;
}

/* 4b. Waiting for a seat: four other processes hold the four seats. */
static void acquire_wait(void) {
    int go[2], ready[2];
    EXPECT(pipe(go) == 0 && pipe(ready) == 0);
    pid_t holders[4];
    for (int i = 0; i < 4; i++) {
        holders[i] = fork();
        if (holders[i] == 0) {
            close(go[1]);
            close(ready[0]);
            tessera_session s = open_demo();
            tessera_seat seat = 0;
            char ok = tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_OK ? 'y' : 'n';
            (void)!write(ready[1], &ok, 1);
            char c;
            (void)!read(go[0], &c, 1); /* hold until told (or the parent is gone) */
            tessera_release(seat);
            tessera_close(s);
            _exit(0);
        }
    }
    close(go[0]);
    close(ready[1]);
    int held = 0;
    for (int i = 0; i < 4; i++) {
        char c = 0;
        EXPECT(read(ready[0], &c, 1) == 1);
        held += c == 'y';
    }
    EXPECT(held == 4);

    tessera_session s = open_demo();
    tessera_seat seat = 0;
    EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_E_NO_SEAT);
    EXPECT(tessera_acquire_wait(s, 1, 0, 0, 0, &seat) == TESSERA_E_NO_SEAT);
    double t0 = now_ms();
    EXPECT(tessera_acquire_wait(s, 1, 0, 0, 300, &seat) == TESSERA_E_NO_SEAT);
    EXPECT(now_ms() - t0 >= 290);
    EXPECT(seat == 0);
    /* Any other answer ends the wait at once: product 9 is not licensed. */
    t0 = now_ms();
    EXPECT(tessera_acquire_wait(s, 9, 0, 0, 60000, &seat) == TESSERA_E_NO_LICENSE);
    EXPECT(now_ms() - t0 < 30000);
    EXPECT(tessera_acquire_wait(s, 1, 0, 0x80, 10, &seat) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(tessera_acquire_wait(s, 1, 0, 0, 10, NULL) == TESSERA_E_INVALID_ARGUMENT);

    /* A session closed under a waiting thread ends its wait: an invalid handle, at once. */
    struct waiter w = {open_demo(), TESSERA_OK, 0};
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, wait_a_minute, &w) == 0);
    usleep(200 * 1000);
    EXPECT(tessera_close(w.s) == TESSERA_OK);
    pthread_join(t, NULL);
    EXPECT(w.st == TESSERA_E_INVALID_HANDLE);
    EXPECT(w.took < 30000);

    /* One holder lets go 200 ms into a wait of a minute: the waiter gets the seat. */
    pid_t releaser = fork();
    if (releaser == 0) {
        usleep(200 * 1000);
        char c = 'x';
        (void)!write(go[1], &c, 1);
        _exit(0);
    }
    EXPECT(tessera_acquire_wait(s, 1, 0, 0, 60000, &seat) == TESSERA_OK);
    EXPECT(seat != 0);
    EXPECT(tessera_release(seat) == TESSERA_OK);
    waitpid(releaser, NULL, 0);
    close(go[1]); /* the other holders let go */
    for (int i = 0; i < 4; i++) waitpid(holders[i], NULL, 0);
    close(ready[0]);
    tessera_close(s);
}

int main(int argc, char **argv) {
    const char *scratch = argc > 1 ? argv[1] : NULL;
    if (!scratch) {
        printf("usage: abi SCRATCH_FOLDER\n");
        return 2;
    }
    tessera_session s = open_demo();
    tessera_seat seat = 0;
    EXPECT(tessera_acquire(s, 1, 0, 0, &seat) == TESSERA_OK);

    in_place(seat);
    contract(s, seat);
    license_list(s, seat);
    EXPECT(tessera_release(seat) == TESSERA_OK);
    handles(s);
    tessera_close(s);
    homes(scratch);
    borrowing();
    acquire_wait();

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
