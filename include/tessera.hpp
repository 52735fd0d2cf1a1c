/*
 * tessera.hpp: header-only C++17 wrappers over the Tessera C API (tessera.h).
 *
 * tessera::session and tessera::seat own their handles (RAII, move-only): a seat releases its
 * seat and a session closes when destroyed. Every failing call throws tessera::error, which
 * carries the status (tessera_status) and the library's detail message. No other dependency.
 *
 *   tessera::session s(vendor_id, publisher_key);
 *   tessera::seat seat = s.acquire(product_code);
 *   std::vector<uint8_t> ct = seat.encrypt(data);
 *   std::vector<uint8_t> pt = seat.decrypt(ct);
 */
#ifndef TESSERA_HPP
#define TESSERA_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tessera.h"

namespace tessera {

/** A failed call: its status and the library's message. */
class error : public std::runtime_error {
public:
    error(tessera_status status, const std::string &what)
        : std::runtime_error(what), status_(status) {}
    /** The status the C API returned. */
    tessera_status status() const noexcept { return status_; }

private:
    tessera_status status_;
};

/** Throws tessera::error unless `st` is TESSERA_OK. */
inline void check(tessera_status st, const char *call) {
    if (st == TESSERA_OK) return;
    std::string msg = std::string(call) + ": " + tessera_status_str(st);
    const char *detail = tessera_last_error();
    if (detail != nullptr && *detail != '\0') msg += std::string(" (") + detail + ")";
    throw error(st, msg);
}

/** Checks that the library speaks the ABI this header was written for. */
inline void check_abi() {
    if (tessera_abi_version() != TESSERA_ABI_VERSION)
        throw error(TESSERA_E_UNSUPPORTED, "libtessera ABI " + std::to_string(tessera_abi_version()) +
                                               " does not match tessera.hpp's " +
                                               std::to_string(TESSERA_ABI_VERSION));
}

/** Encryption modes. */
enum class mode : uint32_t { derived = TESSERA_CRYPT_DERIVED, direct = TESSERA_CRYPT_DIRECT };

/** A held seat; released when destroyed. Move-only. */
class seat {
public:
    seat() noexcept = default;
    explicit seat(tessera_seat handle) noexcept : handle_(handle) {}
    seat(const seat &) = delete;
    seat &operator=(const seat &) = delete;
    seat(seat &&other) noexcept : handle_(std::exchange(other.handle_, 0)) {}
    seat &operator=(seat &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, 0);
        }
        return *this;
    }
    ~seat() { reset(); }

    /** Releases the seat now (destruction does the same). */
    void reset() noexcept {
        if (handle_ != 0) (void)tessera_release(std::exchange(handle_, 0));
    }
    /** Whether the seat is held. */
    explicit operator bool() const noexcept { return handle_ != 0; }
    /** The C handle (still owned by this object). */
    tessera_seat handle() const noexcept { return handle_; }

    /** What the seat is. */
    tessera_seat_details info() const {
        tessera_seat_details d{};
        d.struct_size = sizeof d;
        check(tessera_seat_info(handle_, &d), "tessera_seat_info");
        return d;
    }

    /** Encrypts `data` with the seat's product key. */
    std::vector<uint8_t> encrypt(const std::vector<uint8_t> &data, mode m = mode::derived) const {
        return crypt(data, static_cast<uint32_t>(m), true);
    }

    /** Decrypts a Tessera ciphertext; throws TESSERA_E_TAMPERED on any modification. */
    std::vector<uint8_t> decrypt(const std::vector<uint8_t> &ciphertext) const {
        return crypt(ciphertext, 0, false);
    }

private:
    std::vector<uint8_t> crypt(const std::vector<uint8_t> &in, uint32_t flags, bool enc) const {
        auto fn = enc ? tessera_encrypt : tessera_decrypt;
        const char *name = enc ? "tessera_encrypt" : "tessera_decrypt";
        size_t need = 0;
        tessera_status st = fn(handle_, flags, in.data(), in.size(), nullptr, 0, &need);
        if (st != TESSERA_E_BUFFER_TOO_SMALL) check(st, name);
        std::vector<uint8_t> out(need);
        size_t n = 0;
        check(fn(handle_, flags, in.data(), in.size(), out.data(), out.size(), &n), name);
        out.resize(n);
        return out;
    }

    tessera_seat handle_ = 0;
};

/** An open session; closed (releasing its seats) when destroyed. Move-only. */
class session {
public:
    /** Opens a session for the publisher `vendor_id` whose public key is `publisher_key`. */
    session(uint32_t vendor_id, const uint8_t (&publisher_key)[TESSERA_PUBLISHER_KEY_LEN],
            uint32_t sources = TESSERA_SOURCE_ALL) {
        check_abi();
        tessera_open_options o;
        check(tessera_open_options_init(&o, sizeof o), "tessera_open_options_init");
        o.vendor_id = vendor_id;
        o.publisher_key = publisher_key;
        o.publisher_key_len = TESSERA_PUBLISHER_KEY_LEN;
        o.sources = sources;
        check(tessera_open(&o, &handle_), "tessera_open");
    }
    session(const session &) = delete;
    session &operator=(const session &) = delete;
    session(session &&other) noexcept : handle_(std::exchange(other.handle_, 0)) {}
    session &operator=(session &&other) noexcept {
        if (this != &other) {
            close();
            handle_ = std::exchange(other.handle_, 0);
        }
        return *this;
    }
    ~session() { close(); }

    /** Closes the session now (its seats are released). */
    void close() noexcept {
        if (handle_ != 0) (void)tessera_close(std::exchange(handle_, 0));
    }
    /** The C handle (still owned by this object). */
    tessera_session handle() const noexcept { return handle_; }

    /** Acquires a seat of `product_code` with at least the `features` bits. */
    seat acquire(uint32_t product_code, uint32_t features = 0, bool exclusive = false) const {
        tessera_seat s = 0;
        check(tessera_acquire(handle_, product_code, features, exclusive ? TESSERA_ACQUIRE_EXCLUSIVE : 0, &s),
              "tessera_acquire");
        return seat(s);
    }

    /** Like acquire, but waits up to `timeout_ms` for a seat to come free. */
    seat acquire_wait(uint32_t product_code, uint32_t timeout_ms, uint32_t features = 0,
                      bool exclusive = false) const {
        tessera_seat s = 0;
        check(tessera_acquire_wait(handle_, product_code, features,
                                   exclusive ? TESSERA_ACQUIRE_EXCLUSIVE : 0, timeout_ms, &s),
              "tessera_acquire_wait");
        return seat(s);
    }

    /**
     * Borrows a seat of `product_code` (with at least the `features` bits) from the license
     * server (TESSERA_SERVERS, or discovery) for `days` days: it is kept in this machine's
     * container and acquire() serves it from there, with no server, until it ends. Returns
     * when it ends (seconds since the Unix epoch).
     */
    uint64_t borrow(uint32_t product_code, uint32_t days, uint32_t features = 0) const {
        uint64_t until = 0;
        check(tessera_borrow(handle_, product_code, features, days, &until), "tessera_borrow");
        return until;
    }

    /** Gives a borrowed seat of `product_code` back to the license server before it ends. */
    void return_borrowed(uint32_t product_code) const {
        check(tessera_return_borrowed(handle_, product_code), "tessera_return_borrowed");
    }

    /** The licenses the session can see, without taking a seat. */
    std::vector<tessera_license_info> licenses() const {
        for (;;) {
            size_t count = 0;
            tessera_status st =
                tessera_license_list(handle_, nullptr, 0, sizeof(tessera_license_info), &count);
            if (st == TESSERA_OK) return {};
            if (st != TESSERA_E_BUFFER_TOO_SMALL) check(st, "tessera_license_list");
            std::vector<tessera_license_info> v(count);
            st = tessera_license_list(handle_, v.data(), v.size(), sizeof(tessera_license_info),
                                      &count);
            if (st == TESSERA_E_BUFFER_TOO_SMALL) continue; /* a license came meanwhile */
            check(st, "tessera_license_list");
            v.resize(count);
            return v;
        }
    }

private:
    tessera_session handle_ = 0;
};

}  // namespace tessera

#endif /* TESSERA_HPP */
