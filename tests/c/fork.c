/*
 * fork.c: the fork contract of tessera.h ("fork") from a real C app, driven by
 * tests/attacks/fork.rs (issue 13, item 4). Handles are per process: a child forked after
 * tessera_open/tessera_acquire gets TESSERA_E_FORKED on every inherited session and seat,
 * cannot release the parent's seat, and may open a session of its own.
 *
 * Usage: fork MODE VENDOR_ID PUBLISHER_KEY_HEX PRODUCT [COUNT]   (TESSERA_HOME from the
 * environment; FORK_SOURCES=network takes seats from the server in TESSERA_SERVERS rather
 * than from the software container). Modes:
 *   held     the parent holds the only seat; COUNT children use the inherited session and
 *            seat at the same time (acquire, encrypt, release, close).
 *   idle     the parent took and released the only seat (its seat pool is open); COUNT
 *            children race to acquire through the inherited session and hold what they got,
 *            then each opens a session of its own and tries again.
 *   own      a child opens its own session: no seat while the parent holds it, a seat once
 *            the parent has released it.
 *   hammer   four threads acquire/encrypt/release in a loop while the main thread forks
 *            COUNT times; each child must open a session and acquire within 5 s (alarm).
 *   probe    (internal) a fresh process: exits 0 on TESSERA_E_NO_SEAT, 10 on a seat.
 * Prints one line per finding and "RESULT ok" or "RESULT failed"; exits 0 only on ok.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tessera.h"

static uint32_t vendor, product;
static uint8_t key[TESSERA_PUBLISHER_KEY_LEN];
static int failures = 0;

#define EXPECT(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            printf("FAILED line %d: %s: ", __LINE__, #cond);                           \
            printf(__VA_ARGS__);                                                       \
            printf(" (last error: %s)\n", tessera_last_error());                      \
            fflush(stdout);                                                            \
        }                                                                              \
    } while (0)

static int parse_key(const char *hex) {
    if (strlen(hex) != 2 * sizeof key) return -1;
    for (size_t i = 0; i < sizeof key; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        key[i] = (uint8_t)v;
    }
    return 0;
}

static tessera_status open_session(tessera_session *s) {
    tessera_open_options o;
    tessera_status st = tessera_open_options_init(&o, sizeof o);
    if (st != TESSERA_OK) return st;
    o.vendor_id = vendor;
    o.publisher_key = key;
    o.publisher_key_len = sizeof key;
    /* FORK_SOURCES=network: seats on the license server in TESSERA_SERVERS. */
    const char *src = getenv("FORK_SOURCES");
    o.sources = src && strcmp(src, "network") == 0 ? TESSERA_SOURCE_NETWORK
                                                   : TESSERA_SOURCE_SOFTWARE;
    return tessera_open(&o, s);
}

static tessera_status encrypt(tessera_seat seat) {
    static const uint8_t msg[] = "inherited seat";
    uint8_t ct[sizeof msg + TESSERA_CIPHERTEXT_OVERHEAD];
    size_t n = 0;
    return tessera_encrypt(seat, TESSERA_CRYPT_DERIVED, msg, sizeof msg, ct, sizeof ct, &n);
}

/* Blocks until the other end of the pipe is closed (a start or stop signal to every child). */
static void wait_closed(int fd) {
    char c;
    for (;;) {
        ssize_t n = read(fd, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR)) return;
    }
}

/* Waits for one byte from the other end. */
static void read_one(int fd) {
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {
    }
}

static void write_all(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0 && errno != EINTR) return;
        if (w > 0) s += w, n -= (size_t)w;
    }
}

/* A fresh process (fork + exec of this program in probe mode): what acquire says there. */
static int probe(char **argv) {
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {argv[0], "probe", argv[2], argv[3], argv[4], NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The descriptors open before the library was used (those the test harness passed in). */
static unsigned char before[4096];

static void note_inherited_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd >= 0 && fd < (int)sizeof before && fd != dirfd(d)) before[fd] = 1;
    }
    if (d) closedir(d);
}

/* Every descriptor the library holds must be close-on-exec: an exec'd program is another
 * process image and must not keep the seat locks' open file descriptions alive. */
static void check_cloexec(void) {
    DIR *d = opendir("/proc/self/fd");
    int checked = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd <= 2 || fd == dirfd(d) || (fd < (int)sizeof before && before[fd])) continue;
        int flags = fcntl(fd, F_GETFD);
        char path[256] = "", link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n > 0) path[n] = 0;
        EXPECT(flags >= 0 && (flags & FD_CLOEXEC), "fd %d (%s) is not close-on-exec", fd, path);
        checked++;
    }
    if (d) closedir(d);
    EXPECT(checked > 0, "no library descriptors to check");
    printf("cloexec: %d descriptors checked\n", checked);
}

/* ---- held: the parent holds the only seat; children use the inherited handles -------- */
static int mode_held(char **argv, int count) {
    tessera_session s = 0;
    tessera_seat seat = 0;
    note_inherited_fds();
    EXPECT(open_session(&s) == TESSERA_OK, "open");
    EXPECT(tessera_acquire(s, product, 0, 0, &seat) == TESSERA_OK, "parent acquire");
    check_cloexec();
    int gate[2], results[2], stop[2];
    if (pipe(gate) || pipe(results) || pipe(stop)) return 2;
    pid_t kids[64];
    for (int k = 0; k < count; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            alarm(30);
            close(gate[1]), close(results[0]), close(stop[1]);
            wait_closed(gate[0]);
            tessera_seat mine = 0;
            tessera_status a = tessera_acquire(s, product, 0, 0, &mine);
            tessera_status e = encrypt(seat);
            tessera_status em = a == TESSERA_OK ? encrypt(mine) : TESSERA_E_INVALID_HANDLE;
            tessera_status r = tessera_release(seat);
            tessera_status c = tessera_close(s);
            tessera_status r2 = tessera_release(seat);
            char line[200];
            snprintf(line, sizeof line,
                     "child %d acquire=%d encrypt=%d encrypt_own=%d release=%d close=%d "
                     "release_again=%d\n",
                     k, a, e, em, r, c, r2);
            write_all(results[1], line);
            wait_closed(stop[0]); /* keep whatever it got while the parent looks */
            _exit(0);
        }
    }
    close(gate[0]), close(results[1]), close(stop[0]);
    close(gate[1]); /* all children go at once */
    FILE *in = fdopen(results[0], "r");
    char line[200];
    int lines = 0, granted = 0, encrypted = 0;
    while (lines < count && fgets(line, sizeof line, in)) {
        int k, a, e, em, r, c, r2;
        if (sscanf(line, "child %d acquire=%d encrypt=%d encrypt_own=%d release=%d close=%d "
                         "release_again=%d", &k, &a, &e, &em, &r, &c, &r2) != 7)
            continue;
        lines++;
        fputs(line, stdout);
        granted += a == TESSERA_OK;
        encrypted += e == TESSERA_OK || em == TESSERA_OK;
        EXPECT(a == TESSERA_E_FORKED, "child %d acquire through the inherited session: %d", k, a);
        EXPECT(e == TESSERA_E_FORKED, "child %d encrypt with the inherited seat: %d", k, e);
        EXPECT(r == TESSERA_E_FORKED, "child %d release of the inherited seat: %d", k, r);
        EXPECT(c == TESSERA_E_FORKED, "child %d close of the inherited session: %d", k, c);
        EXPECT(r2 == TESSERA_E_INVALID_HANDLE, "child %d second release: %d", k, r2);
    }
    EXPECT(lines == count, "%d of %d children reported", lines, count);
    printf("held: children granted a seat: %d, children encrypting: %d\n", granted, encrypted);
    /* While the children are alive (and hold their copies of every descriptor): */
    EXPECT(encrypt(seat) == TESSERA_OK, "the parent's seat works");
    int p = probe(argv);
    EXPECT(p == 0, "a fresh process while the parent holds the seat: probe %d", p);
    close(stop[1]);
    for (int k = 0; k < count; k++) waitpid(kids[k], NULL, 0);
    EXPECT(encrypt(seat) == TESSERA_OK, "the parent's seat works after the children exit");
    p = probe(argv);
    EXPECT(p == 0, "a fresh process after the children exit: probe %d", p);
    EXPECT(tessera_release(seat) == TESSERA_OK, "parent release");
    p = probe(argv);
    EXPECT(p == 10, "a fresh process after the parent released: probe %d", p);
    EXPECT(tessera_close(s) == TESSERA_OK, "parent close");
    fclose(in);
    return 0;
}

/* ---- idle: children race through the parent's seat pool ------------------------------ */
static int mode_idle(char **argv, int count) {
    (void)argv;
    tessera_session s = 0;
    tessera_seat seat = 0;
    EXPECT(open_session(&s) == TESSERA_OK, "open");
    EXPECT(tessera_acquire(s, product, 0, 0, &seat) == TESSERA_OK, "parent acquire");
    EXPECT(tessera_release(seat) == TESSERA_OK, "parent release");
    int gate[2], results[2], stop[2];
    if (pipe(gate) || pipe(results) || pipe(stop)) return 2;
    pid_t kids[64];
    for (int k = 0; k < count; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            alarm(30);
            close(gate[1]), close(results[0]), close(stop[1]);
            wait_closed(gate[0]);
            tessera_seat inherited = 0, own = 0;
            tessera_session mine = 0;
            tessera_status a = tessera_acquire(s, product, 0, 0, &inherited);
            tessera_status e = a == TESSERA_OK ? encrypt(inherited) : TESSERA_E_INVALID_HANDLE;
            char line[200];
            snprintf(line, sizeof line, "child %d inherited acquire=%d encrypt=%d\n", k, a, e);
            write_all(results[1], line);
            /* Then a session of its own: one seat among all the children. */
            tessera_status o = open_session(&mine);
            tessera_status b = o == TESSERA_OK ? tessera_acquire(mine, product, 0, 0, &own) : o;
            snprintf(line, sizeof line, "child %d own acquire=%d\n", k, b);
            write_all(results[1], line);
            wait_closed(stop[0]);
            _exit(0);
        }
    }
    close(gate[0]), close(results[1]), close(stop[0]);
    close(gate[1]);
    FILE *in = fdopen(results[0], "r");
    char line[200];
    int lines = 0, inherited = 0, own = 0;
    while (lines < 2 * count && fgets(line, sizeof line, in)) {
        int k, a, e;
        fputs(line, stdout);
        if (sscanf(line, "child %d inherited acquire=%d encrypt=%d", &k, &a, &e) == 3) {
            lines++;
            inherited += a == TESSERA_OK;
            EXPECT(a == TESSERA_E_FORKED, "child %d inherited acquire: %d", k, a);
        } else if (sscanf(line, "child %d own acquire=%d", &k, &a) == 2) {
            lines++;
            own += a == TESSERA_OK;
            EXPECT(a == TESSERA_OK || a == TESSERA_E_NO_SEAT, "child %d own acquire: %d", k, a);
        }
    }
    EXPECT(lines == 2 * count, "%d of %d reports", lines, 2 * count);
    printf("idle: holders through the inherited session: %d, through their own: %d\n",
           inherited, own);
    EXPECT(inherited + own <= 1, "%d simultaneous holders of a 1-seat license", inherited + own);
    EXPECT(own == 1, "one child of its own session got the seat");
    close(stop[1]);
    for (int k = 0; k < count; k++) waitpid(kids[k], NULL, 0);
    EXPECT(tessera_close(s) == TESSERA_OK, "parent close");
    fclose(in);
    return 0;
}

/* ---- own: a child's own session gets the seat once the parent releases it ------------ */
static int mode_own(char **argv) {
    (void)argv;
    tessera_session s = 0;
    tessera_seat seat = 0;
    EXPECT(open_session(&s) == TESSERA_OK, "open");
    EXPECT(tessera_acquire(s, product, 0, 0, &seat) == TESSERA_OK, "parent acquire");
    int up[2], down[2];
    if (pipe(up) || pipe(down)) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        close(up[0]), close(down[1]);
        tessera_session mine = 0;
        tessera_seat own = 0;
        int bad = 0;
        if (open_session(&mine) != TESSERA_OK) bad |= 1;
        tessera_status a = tessera_acquire(mine, product, 0, 0, &own);
        printf("child: own acquire while the parent holds the seat: %d\n", a);
        if (a != TESSERA_E_NO_SEAT) bad |= 2;
        fflush(stdout);
        write_all(up[1], "1");
        wait_closed(down[0]); /* the parent has released */
        a = tessera_acquire(mine, product, 0, 0, &own);
        printf("child: own acquire after the parent released: %d (%s)\n", a,
               tessera_last_error());
        if (a != TESSERA_OK) bad |= 4;
        if (a == TESSERA_OK && encrypt(own) != TESSERA_OK) bad |= 8;
        if (a == TESSERA_OK && tessera_release(own) != TESSERA_OK) bad |= 16;
        if (tessera_close(mine) != TESSERA_OK) bad |= 32;
        fflush(stdout);
        _exit(bad);
    }
    close(up[1]), close(down[0]);
    read_one(up[0]);
    EXPECT(encrypt(seat) == TESSERA_OK, "the parent's seat works");
    EXPECT(tessera_release(seat) == TESSERA_OK, "parent release");
    close(down[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    EXPECT(tessera_close(s) == TESSERA_OK, "parent close");
    return 0;
}

/* ---- hammer: fork while other threads are inside the library ------------------------- */
static volatile int stopping = 0;

static void *hammer(void *arg) {
    tessera_session s = *(tessera_session *)arg;
    while (!stopping) {
        tessera_seat seat = 0;
        if (tessera_acquire(s, product, 0, 0, &seat) == TESSERA_OK) {
            encrypt(seat);
            tessera_release(seat);
        }
    }
    return NULL;
}

static int mode_hammer(char **argv, int count) {
    (void)argv;
    tessera_session s = 0;
    EXPECT(open_session(&s) == TESSERA_OK, "open");
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, &s);
    int hung = 0, failed = 0, forks = 0;
    for (int i = 0; i < count && hung < 3; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(5); /* a hang is a SIGALRM death */
            tessera_seat inherited = 0, own = 0;
            tessera_session mine = 0;
            int bad = 0;
            if (tessera_acquire(s, product, 0, 0, &inherited) != TESSERA_E_FORKED) bad |= 1;
            if (open_session(&mine) != TESSERA_OK) bad |= 2;
            if (tessera_acquire(mine, product, 0, 0, &own) != TESSERA_OK) bad |= 4;
            if (encrypt(own) != TESSERA_OK) bad |= 8;
            if (tessera_release(own) != TESSERA_OK) bad |= 16;
            if (tessera_close(mine) != TESSERA_OK) bad |= 32;
            _exit(bad);
        }
        forks++;
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {
            hung++;
            printf("fork %d: the child hung\n", i);
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failed++;
            printf("fork %d: the child failed (status %#x)\n", i, st);
        }
    }
    stopping = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("hammer: forks=%d hung=%d failed=%d\n", forks, hung, failed);
    EXPECT(hung == 0, "%d children hung", hung);
    EXPECT(failed == 0, "%d children failed", failed);
    EXPECT(tessera_close(s) == TESSERA_OK, "parent close");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 5 || parse_key(argv[3]) != 0) {
        fprintf(stderr, "usage: fork MODE VENDOR_ID KEY_HEX PRODUCT [COUNT]\n");
        return 2;
    }
    vendor = (uint32_t)strtoul(argv[2], NULL, 0);
    product = (uint32_t)strtoul(argv[4], NULL, 0);
    int count = argc > 5 ? atoi(argv[5]) : 8;
    if (count < 1 || count > 64) count = 8;
    const char *mode = argv[1];
    if (strcmp(mode, "probe") == 0) {
        tessera_session s = 0;
        tessera_seat seat = 0;
        if (open_session(&s) != TESSERA_OK) return 20;
        tessera_status a = tessera_acquire(s, product, 0, 0, &seat);
        return a == TESSERA_E_NO_SEAT ? 0 : a == TESSERA_OK ? 10 : 20;
    }
    int r;
    if (strcmp(mode, "held") == 0) r = mode_held(argv, count);
    else if (strcmp(mode, "idle") == 0) r = mode_idle(argv, count);
    else if (strcmp(mode, "own") == 0) r = mode_own(argv);
    else if (strcmp(mode, "hammer") == 0) {
        /* count here is the number of forks, not children at once */
        int forks = argc > 5 ? atoi(argv[5]) : 200;
        r = mode_hammer(argv, forks > 0 ? forks : 200);
    } else r = 2;
    if (r != 0) return r;
    printf("RESULT %s (%d failed)\n", failures ? "failed" : "ok", failures);
    return failures ? 1 : 0;
}
