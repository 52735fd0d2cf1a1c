// borrow.cpp: tessera.hpp's borrow() and return_borrowed() against a license server
// (TESSERA_SERVERS, started by tests/borrow.rs) that lends product 1 of the demo publisher
// for up to 2 days. Prints "cpp borrow: N checks, 0 failed".
#include <cstdio>
#include <ctime>

#include "tessera.hpp"

static const uint8_t DEMO_KEY[TESSERA_PUBLISHER_KEY_LEN] = {
    0x3b, 0x9a, 0x9c, 0x54, 0x9e, 0xc7, 0x59, 0xd5, 0x34, 0x40, 0x96, 0xd0, 0xea, 0xa5, 0xe7, 0xe7,
    0xfe, 0x34, 0x97, 0x5e, 0x17, 0x7c, 0x58, 0x6e, 0x78, 0xbd, 0xb7, 0x0b, 0xc2, 0x72, 0x9b, 0x18,
};

static int checks = 0, failures = 0;

#define EXPECT(cond)                                                    \
    do {                                                                \
        checks++;                                                       \
        if (!(cond)) {                                                  \
            failures++;                                                 \
            std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                               \
    } while (0)

template <typename F>
static tessera_status status_of(F f) {
    try {
        f();
        return TESSERA_OK;
    } catch (const tessera::error &e) {
        std::printf("  %s\n", e.what());
        return e.status();
    }
}

int main() {
    tessera::session s(0x7E55, DEMO_KEY, TESSERA_SOURCE_SOFTWARE | TESSERA_SOURCE_NETWORK);
    EXPECT(status_of([&] { s.borrow(1, 3); }) == TESSERA_E_INVALID_ARGUMENT);
    EXPECT(status_of([&] { s.return_borrowed(1); }) == TESSERA_E_NO_LICENSE);
    uint64_t before = static_cast<uint64_t>(std::time(nullptr));
    uint64_t until = 0;
    EXPECT(status_of([&] { until = s.borrow(1, 2, 0x1); }) == TESSERA_OK);
    EXPECT(until >= before + 2 * 86400 && until <= before + 2 * 86400 + 600);
    {
        tessera::seat seat = s.acquire(1);
        tessera_seat_details d = seat.info();
        EXPECT((d.flags & TESSERA_SEAT_BORROWED) != 0);
        EXPECT(d.source == TESSERA_SOURCE_SOFTWARE && d.expiry == until && d.quantity == 1);
        std::vector<uint8_t> msg = {'o', 'f', 'f', 'l', 'i', 'n', 'e'};
        EXPECT(seat.decrypt(seat.encrypt(msg)) == msg);
    }
    bool listed = false;
    for (const tessera_license_info &l : s.licenses())
        if ((l.flags & TESSERA_LICENSE_BORROWED) != 0 && l.borrowed_until == until) listed = true;
    EXPECT(listed);
    EXPECT(status_of([&] { s.return_borrowed(1); }) == TESSERA_OK);
    EXPECT(status_of([&] { s.return_borrowed(1); }) == TESSERA_E_NO_LICENSE);
    std::printf("cpp borrow: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
