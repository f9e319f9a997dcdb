// uws-peer: a uWebSockets pub/sub server that speaks tickcast's client
// protocol (docs/PROTOCOL.md) over the same simulated feed, as an
// independent reference for tickcast's end-to-end benchmarks.
//
// One thread, one uWS event loop. A loop timer runs the simulator on a
// deadline schedule (the pacing of tickcast's built-in feed); each tick is
// formatted once, exactly as tickcast formats it, and published with
// uWS's own pub/sub: to the topic named after its symbol, and to the topic
// "*" that clients subscribed to every symbol sit in. uWS then writes each
// subscriber's share of a loop pass in one corked write.
//
// Usage: uws-peer [--host H] [--port P] [--rate R] [--symbols N] [--seed S]
//                 [--timer-slack-us US] [--max-backpressure BYTES]
// See benches/peers/uws/README.md for what differs from tickcast.

#include "App.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <sys/timerfd.h>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// Limits, as tickcast's defaults (src/config.rs).

// Largest client message (--max-message-bytes).
constexpr unsigned MAX_MESSAGE_BYTES = 64 * 1024;
// Queued output per connection (--max-outbox-bytes); see maxBackpressure.
constexpr size_t DEFAULT_MAX_BACKPRESSURE = 256 * 1024;
// Most symbols one connection may subscribe to by name (--max-subscriptions).
constexpr size_t MAX_SUBSCRIPTIONS = 10000;
// JSON limits of a client message (src/protocol/json.rs).
constexpr int MAX_JSON_DEPTH = 32;
constexpr size_t MAX_JSON_VALUES = 100000;
// The topic every tick is also published to: clients on "*" sit in it.
constexpr std::string_view ALL_TOPIC = "*";
// The longest backlog released in one pass after a stall (src/feed/pacer.rs).
constexpr double MAX_CATCH_UP_NS = 100e6;

// ---------------------------------------------------------------------------
// The symbol universe of src/feed/symbols.rs: the same names, in the same
// order, at the same starting prices.

struct Listed {
    const char *name;
    double price;
};

constexpr Listed LISTED[] = {
    {"AAPL", 187.20},  {"MSFT", 415.50}, {"NVDA", 121.40},  {"AMZN", 183.10},
    {"GOOGL", 171.90}, {"META", 502.30}, {"TSLA", 248.70},  {"BRK.B", 412.80},
    {"AVGO", 162.40},  {"JPM", 205.60},  {"LLY", 790.10},   {"V", 275.30},
    {"UNH", 512.40},   {"XOM", 117.80},  {"MA", 468.20},    {"JNJ", 155.90},
    {"PG", 167.40},    {"HD", 372.50},   {"COST", 842.60},  {"MRK", 126.70},
    {"ABBV", 171.30},  {"CVX", 158.20},  {"CRM", 272.80},   {"BAC", 39.70},
    {"NFLX", 648.90},  {"AMD", 158.60},  {"PEP", 171.20},   {"KO", 62.80},
    {"TMO", 572.10},   {"WMT", 68.40},   {"ADBE", 521.70},  {"LIN", 452.30},
    {"MCD", 265.40},   {"CSCO", 47.90},  {"ACN", 318.60},   {"ABT", 106.20},
    {"ORCL", 138.40},  {"INTC", 30.80},  {"DIS", 101.50},   {"WFC", 59.30},
    {"QCOM", 201.70},  {"INTU", 641.20}, {"CMCSA", 38.60},  {"VZ", 40.90},
    {"IBM", 183.40},   {"TXN", 196.80},  {"AMGN", 312.50},  {"PFE", 28.70},
    {"NKE", 94.10},    {"CAT", 339.20},  {"GE", 162.80},    {"NOW", 761.40},
    {"UBER", 68.30},   {"SPGI", 438.70}, {"GS", 458.90},    {"HON", 202.10},
    {"UNP", 229.40},   {"T", 17.40},     {"LOW", 226.80},   {"BA", 182.30},
    {"AMAT", 238.60},  {"MS", 97.50},    {"BKNG", 3867.00}, {"ISRG", 402.90},
    {"RTX", 102.60},   {"PLD", 107.30},  {"SBUX", 79.20},   {"BLK", 786.40},
    {"DE", 386.10},    {"MDT", 82.50},   {"ELV", 535.80},   {"GILD", 65.90},
    {"ADP", 245.70},   {"LMT", 461.20},  {"C", 62.40},      {"SCHW", 74.10},
    {"MDLZ", 68.70},   {"TJX", 101.30},  {"ADI", 229.80},   {"CVS", 59.60},
    {"REGN", 1012.40}, {"VRTX", 468.90}, {"MMC", 208.50},   {"PANW", 318.20},
    {"CB", 261.70},    {"ETN", 331.60},  {"BMY", 41.80},    {"SO", 78.90},
    {"MU", 132.40},    {"LRCX", 941.30}, {"PYPL", 63.20},   {"ZTS", 171.40},
    {"SNPS", 584.60},  {"DUK", 101.20},  {"KLAC", 801.50},  {"CME", 198.30},
    {"SHOP", 66.10},   {"ABNB", 148.70}, {"PLTR", 24.60},   {"COIN", 226.40},
};

uint64_t splitmix(uint64_t n) {
    uint64_t z = n + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The nth generated name: consonant-vowel-consonant-consonant, widened by
// two letters past half the four-letter space.
std::string generated_name(uint64_t n) {
    static constexpr std::string_view CONSONANTS = "BCDFGHJKLMNPRSTVWXZ";
    static constexpr std::string_view VOWELS = "AEIOU";
    const uint64_t c = CONSONANTS.size(), v = VOWELS.size();
    uint64_t x = splitmix(n);
    std::string name;
    for (std::string_view alphabet : {CONSONANTS, VOWELS, CONSONANTS, CONSONANTS}) {
        name.push_back(alphabet[x % alphabet.size()]);
        x /= alphabet.size();
    }
    const uint64_t space = c * v * c * c;
    if (n >= space / 2) {
        name.push_back(VOWELS[(n / (space / 2)) % v]);
        name.push_back(CONSONANTS[n % c]);
    }
    return name;
}

struct SymbolSpec {
    std::string name;
    double start_price;
};

std::vector<SymbolSpec> universe(size_t count) {
    std::vector<SymbolSpec> specs;
    std::unordered_set<std::string> taken;
    for (const Listed &listed : LISTED) {
        if (specs.size() == count) break;
        specs.push_back({listed.name, listed.price});
        taken.insert(listed.name);
    }
    uint64_t n = 0;
    while (specs.size() < count) {
        std::string name = generated_name(n);
        n += 1;
        if (taken.insert(name).second) {
            // A price between $5 and $500, log-uniform, fixed by the name.
            double unit = double(splitmix(n) >> 11) / double(uint64_t(1) << 53);
            double start = std::exp(std::log(5.0) + unit * std::log(500.0 / 5.0));
            specs.push_back({std::move(name), std::round(start * 100.0) / 100.0});
        }
    }
    return specs;
}

// ---------------------------------------------------------------------------
// The price model of src/feed/sim.rs: a driftless geometric Brownian motion
// per symbol, quoted in whole cents with a spread of about 2 basis points,
// trade sizes mostly in round lots. Same parameters; its own random numbers
// (xoshiro256**), so the stream is alike in shape, not tick for tick.

class Rng {
public:
    explicit Rng(uint64_t seed) {
        for (uint64_t &word : s_) word = seed = splitmix(seed);
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    // Uniform in [0, 1).
    double unit() { return double(next() >> 11) * 0x1.0p-53; }
    // Uniform in [0, n).
    uint64_t below(uint64_t n) { return uint64_t((unsigned __int128) next() * n >> 64); }
    // Standard normal (Marsaglia's polar method).
    double normal() {
        if (spare_) {
            double value = *spare_;
            spare_.reset();
            return value;
        }
        double u, v, s;
        do {
            u = 2.0 * unit() - 1.0;
            v = 2.0 * unit() - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        double scale = std::sqrt(-2.0 * std::log(s) / s);
        spare_ = v * scale;
        return u * scale;
    }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
    std::optional<double> spare_;
};

struct Tick {
    uint32_t symbol;
    uint64_t seq;
    int64_t px, bid, ask;  // cents
    uint32_t size;
    uint64_t ts;           // ns since the Unix epoch
};

class Simulator {
public:
    Simulator(const std::vector<SymbolSpec> &symbols, double rate, uint64_t seed)
        : rng_(seed), seconds_per_tick_(1.0 / rate) {
        // 252 trading days of 6.5 hours; market time runs 30x feed time.
        const double acceleration = 30.0, seconds_per_year = 252.0 * 6.5 * 3600.0;
        for (const SymbolSpec &spec : symbols) {
            double annual_vol = 0.15 + rng_.unit() * (0.60 - 0.15);
            walks_.push_back({spec.start_price,
                              annual_vol * std::sqrt(acceleration / seconds_per_year), 0.0, 0});
        }
    }

    Tick next(uint64_t ts) {
        const uint32_t symbol = uint32_t(rng_.below(walks_.size()));
        const double z = rng_.normal();
        const bool hit_bid = rng_.next() >> 63;
        const uint32_t size = trade_size();

        Walk &walk = walks_[symbol];
        const double dt = std::max(now_ - walk.last_time, seconds_per_tick_);
        walk.last_time = now_;
        now_ += seconds_per_tick_;

        const double sigma = walk.vol_per_sqrt_second;
        walk.mid *= std::exp(-0.5 * sigma * sigma * dt + sigma * std::sqrt(dt) * z);
        walk.mid = std::max(walk.mid, INCREMENT);
        walk.seq += 1;

        const double spread = std::max(std::round(walk.mid * 0.0002 / INCREMENT), 1.0);
        const double bid = std::max(std::floor(walk.mid / INCREMENT - spread / 2.0), 1.0);
        const int64_t bid_cents = int64_t(bid), ask_cents = int64_t(bid + spread);
        return {symbol, walk.seq, hit_bid ? bid_cents : ask_cents, bid_cents, ask_cents, size, ts};
    }

private:
    static constexpr double INCREMENT = 0.01;  // one cent

    struct Walk {
        double mid;
        double vol_per_sqrt_second;
        double last_time;
        uint64_t seq;
    };

    // Mostly round lots of 100 (smaller lots more often), one trade in ten
    // an odd lot.
    uint32_t trade_size() {
        if (rng_.below(10) == 0) return uint32_t(1 + rng_.below(99));
        const double u = rng_.unit();
        return (1 + uint32_t(u * u * u * 50.0)) * 100;
    }

    Rng rng_;
    std::vector<Walk> walks_;
    double seconds_per_tick_;
    double now_ = 0.0;
};

// ---------------------------------------------------------------------------
// Deadline pacing of src/feed/pacer.rs: tick n is due at start + n / rate;
// oversleeping releases what came due meanwhile, and a stall longer than
// MAX_CATCH_UP is dropped from the schedule instead of replayed as a burst.

uint64_t monotonic_ns() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return uint64_t(t.tv_sec) * 1000000000ull + uint64_t(t.tv_nsec);
}

uint64_t wall_clock_ns() {
    timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return uint64_t(t.tv_sec) * 1000000000ull + uint64_t(t.tv_nsec);
}

class Pacer {
public:
    Pacer(double rate, uint64_t start) : start_(start), nanos_per_tick_(1e9 / rate) {}

    uint64_t due(uint64_t now) {
        const double elapsed = now > start_ ? double(now - start_) : 0.0;
        uint64_t target = uint64_t(elapsed / nanos_per_tick_) + 1;
        const uint64_t max_batch = std::max<uint64_t>(uint64_t(std::ceil(MAX_CATCH_UP_NS / nanos_per_tick_)), 1);
        if (target > released_ + max_batch) {
            const uint64_t skip = target - released_ - max_batch;
            skipped_ += skip;
            released_ += skip;
        }
        target = std::max(target, released_);
        const uint64_t due = target - released_;
        released_ = target;
        return due;
    }

    uint64_t next_deadline() const { return due_at(released_); }

    // When tick `index` (0-based, counting skipped ones) was due.
    uint64_t due_at(uint64_t index) const { return start_ + uint64_t(double(index) * nanos_per_tick_); }

    uint64_t released() const { return released_; }
    uint64_t skipped() const { return skipped_; }

private:
    uint64_t start_;
    double nanos_per_tick_;
    uint64_t released_ = 0;
    uint64_t skipped_ = 0;
};

// ---------------------------------------------------------------------------
// Tick JSON, byte for byte as src/fanout/encode.rs writes it.

void put_u64(std::string &out, uint64_t value) {
    char digits[20];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
    out.append(digits, end);
}

// A price in cents as its shortest exact decimal: 187.25, 187.2, 386.
void put_cents(std::string &out, int64_t cents) {
    if (cents < 0) {
        out.push_back('-');
        cents = -cents;
    }
    put_u64(out, uint64_t(cents / 100));
    const int fraction = int(cents % 100);
    if (fraction == 0) return;
    out.push_back('.');
    out.push_back(char('0' + fraction / 10));
    if (fraction % 10) out.push_back(char('0' + fraction % 10));
}

void write_tick_json(std::string &out, bool snapshot, std::string_view name, const Tick &tick) {
    out.append(snapshot ? R"({"type":"snapshot","sym":")" : R"({"type":"tick","sym":")");
    out.append(name);
    out.append(R"(","seq":)");
    put_u64(out, tick.seq);
    out.append(R"(,"px":)");
    put_cents(out, tick.px);
    out.append(R"(,"bid":)");
    put_cents(out, tick.bid);
    out.append(R"(,"ask":)");
    put_cents(out, tick.ask);
    out.append(R"(,"size":)");
    put_u64(out, tick.size);
    out.append(R"(,"ts":)");
    put_u64(out, tick.ts);
    out.push_back('}');
}

// A JSON string as serde_json writes it: quotes, backslashes and control
// characters escaped, everything else as is.
void put_json_string(std::string &out, std::string_view text) {
    static constexpr char HEX[] = "0123456789abcdef";
    out.push_back('"');
    for (unsigned char c : text) {
        switch (c) {
            case '"': out.append("\\\""); break;
            case '\\': out.append("\\\\"); break;
            case '\b': out.append("\\b"); break;
            case '\f': out.append("\\f"); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\t': out.append("\\t"); break;
            default:
                if (c < 0x20) {
                    out.append("\\u00");
                    out.push_back(HEX[c >> 4]);
                    out.push_back(HEX[c & 15]);
                } else {
                    out.push_back(char(c));
                }
        }
    }
    out.push_back('"');
}

// At most max bytes of text, cut on a character boundary.
std::string_view truncate(std::string_view text, size_t max) {
    size_t end = std::min(text.size(), max);
    while (end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) end--;
    return text.substr(0, end);
}

// A name quoted for a message to a person, as tickcast quotes it ("ZZZZ").
std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(char(c));
        } else if (c == '\n') {
            out.append("\\n");
        } else if (c == '\r') {
            out.append("\\r");
        } else if (c == '\t') {
            out.append("\\t");
        } else if (c < 0x20 || c == 0x7f) {
            char escape[12];
            std::snprintf(escape, sizeof escape, "\\u{%x}", c);
            out.append(escape);
        } else {
            out.push_back(char(c));
        }
    }
    out.push_back('"');
    return out;
}

std::string error_reply(std::string_view code, std::string_view message) {
    std::string out = R"({"type":"error","code":")";
    out.append(code);
    out.append(R"(","message":)");
    put_json_string(out, message);
    out.push_back('}');
    return out;
}

// ---------------------------------------------------------------------------
// A small JSON reader for client requests: the whole grammar (RFC 8259),
// at most MAX_JSON_DEPTH levels and MAX_JSON_VALUES values.

struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool boolean = false;
    std::string text;  // a number's text, or a string's decoded UTF-8
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json *get(std::string_view key) const {
        const Json *found = nullptr;
        for (const auto &[name, value] : members) {
            if (name == key) found = &value;  // the last of duplicate keys
        }
        return found;
    }
};

struct JsonError {
    enum Kind { Syntax, LoneSurrogate } kind;
    std::string message;
};

class JsonReader {
public:
    explicit JsonReader(std::string_view text) : text_(text) {}

    std::optional<Json> read() {
        skip_space();
        if (pos_ == text_.size()) {
            fail("the message is empty; send one JSON object per text frame");
            return std::nullopt;
        }
        Json value;
        if (!value_at(value, 1)) return std::nullopt;
        skip_space();
        if (pos_ != text_.size()) {
            fail_here("there is more after the JSON value");
            return std::nullopt;
        }
        return value;
    }

    const JsonError &error() const { return error_; }

private:
    void skip_space() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) pos_++;
    }

    void fail(std::string message, JsonError::Kind kind = JsonError::Syntax) {
        if (error_.message.empty()) error_ = {kind, std::move(message)};
    }

    // Characters (not bytes) before byte offset at.
    size_t character_at(size_t at) const {
        size_t character = 0;
        for (size_t i = 0; i < at && i < text_.size(); i++) {
            if ((static_cast<unsigned char>(text_[i]) & 0xC0) != 0x80) character++;
        }
        return character;
    }

    // What is wrong, at which character (counted from 0), and the text
    // around it with ▶ marking the place.
    void fail_here(std::string_view what) {
        const size_t character = character_at(pos_);
        size_t from = pos_ > 24 ? pos_ - 24 : 0;
        while (from > 0 && (static_cast<unsigned char>(text_[from]) & 0xC0) == 0x80) from--;
        std::string_view before = text_.substr(from, std::min(pos_, text_.size()) - from);
        std::string_view after = truncate(text_.substr(std::min(pos_, text_.size())), 24);
        std::string message(what);
        message += ", at character " + std::to_string(character) + ": «" + std::string(before) + "▶" + std::string(after) + "»";
        fail(std::move(message));
    }

    bool value_at(Json &out, int depth) {
        if (++values_ > MAX_JSON_VALUES) {
            fail("the message holds more than " + std::to_string(MAX_JSON_VALUES) + " values");
            return false;
        }
        skip_space();
        if (pos_ == text_.size()) {
            fail_here("the message ends where a value should be");
            return false;
        }
        char c = text_[pos_];
        if (c == '{' || c == '[') {
            if (depth > MAX_JSON_DEPTH) {
                fail_here("arrays and objects nest more than " + std::to_string(MAX_JSON_DEPTH) + " deep");
                return false;
            }
            return c == '{' ? object_at(out, depth) : array_at(out, depth);
        }
        if (c == '"') {
            out.kind = Json::String;
            return string_at(out.text);
        }
        if (c == '-' || (c >= '0' && c <= '9')) return number_at(out);
        for (auto [word, kind, boolean] : {std::tuple{"true", Json::Bool, true}, std::tuple{"false", Json::Bool, false},
                                            std::tuple{"null", Json::Null, false}}) {
            if (text_.substr(pos_, std::strlen(word)) == word) {
                pos_ += std::strlen(word);
                out.kind = kind;
                out.boolean = boolean;
                return true;
            }
        }
        fail_here("a value was expected (an object, array, string, number, true, false or null)");
        return false;
    }

    bool object_at(Json &out, int depth) {
        out.kind = Json::Object;
        pos_++;
        skip_space();
        if (pos_ < text_.size() && text_[pos_] == '}') {
            pos_++;
            return true;
        }
        while (true) {
            skip_space();
            if (pos_ == text_.size() || text_[pos_] != '"') {
                fail_here(pos_ == text_.size() ? "the message ends inside an object" : "a key (a string in double quotes) was expected");
                return false;
            }
            std::string key;
            if (!string_at(key)) return false;
            skip_space();
            if (pos_ == text_.size() || text_[pos_] != ':') {
                fail_here("a colon is missing after the key");
                return false;
            }
            pos_++;
            Json value;
            if (!value_at(value, depth + 1)) return false;
            out.members.emplace_back(std::move(key), std::move(value));
            skip_space();
            if (pos_ < text_.size() && text_[pos_] == ',') {
                pos_++;
                continue;
            }
            if (pos_ < text_.size() && text_[pos_] == '}') {
                pos_++;
                return true;
            }
            fail_here(pos_ == text_.size() ? "the message ends inside an object" : "a comma is missing between two values");
            return false;
        }
    }

    bool array_at(Json &out, int depth) {
        out.kind = Json::Array;
        pos_++;
        skip_space();
        if (pos_ < text_.size() && text_[pos_] == ']') {
            pos_++;
            return true;
        }
        while (true) {
            Json item;
            if (!value_at(item, depth + 1)) return false;
            out.items.push_back(std::move(item));
            skip_space();
            if (pos_ < text_.size() && text_[pos_] == ',') {
                pos_++;
                continue;
            }
            if (pos_ < text_.size() && text_[pos_] == ']') {
                pos_++;
                return true;
            }
            fail_here(pos_ == text_.size() ? "the message ends inside an array" : "a comma is missing between two values");
            return false;
        }
    }

    bool number_at(Json &out) {
        const size_t start = pos_;
        auto digits = [&] {
            size_t from = pos_;
            while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') pos_++;
            return pos_ > from;
        };
        if (text_[pos_] == '-') pos_++;
        if (pos_ < text_.size() && text_[pos_] == '0') {
            pos_++;
        } else if (!digits()) {
            fail_here("a number needs digits");
            return false;
        }
        if (pos_ < text_.size() && text_[pos_] == '.') {
            pos_++;
            if (!digits()) {
                fail_here("a number needs digits after its decimal point");
                return false;
            }
        }
        if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
            pos_++;
            if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) pos_++;
            if (!digits()) {
                fail_here("a number needs digits in its exponent");
                return false;
            }
        }
        out.kind = Json::Number;
        out.text = std::string(text_.substr(start, pos_ - start));
        // Like tickcast's reader: a whole number past 64 bits, or any
        // number past a double's range, is not read.
        bool fits;
        const char *first = out.text.data(), *last = first + out.text.size();
        if (out.text.find_first_of(".eE") == std::string::npos) {
            int64_t negative;
            uint64_t positive;
            fits = out.text[0] == '-' ? std::from_chars(first, last, negative).ec == std::errc()
                                      : std::from_chars(first, last, positive).ec == std::errc();
        } else {
            fits = std::isfinite(std::strtod(out.text.c_str(), nullptr));
        }
        if (!fits) {
            pos_ = start + out.text.size() - 1;
            fail_here("a number is malformed or out of range");
            return false;
        }
        return true;
    }

    static void put_utf8(std::string &out, uint32_t code) {
        if (code < 0x80) {
            out.push_back(char(code));
        } else if (code < 0x800) {
            out.push_back(char(0xC0 | (code >> 6)));
            out.push_back(char(0x80 | (code & 0x3F)));
        } else if (code < 0x10000) {
            out.push_back(char(0xE0 | (code >> 12)));
            out.push_back(char(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(char(0x80 | (code & 0x3F)));
        } else {
            out.push_back(char(0xF0 | (code >> 18)));
            out.push_back(char(0x80 | ((code >> 12) & 0x3F)));
            out.push_back(char(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(char(0x80 | (code & 0x3F)));
        }
    }

    std::optional<uint32_t> hex4() {
        if (pos_ + 4 > text_.size()) return std::nullopt;
        uint32_t value = 0;
        for (int i = 0; i < 4; i++) {
            char c = text_[pos_ + i];
            value <<= 4;
            if (c >= '0' && c <= '9') value |= uint32_t(c - '0');
            else if (c >= 'a' && c <= 'f') value |= uint32_t(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') value |= uint32_t(c - 'A' + 10);
            else return std::nullopt;
        }
        pos_ += 4;
        return value;
    }

    // A string starting at the opening quote, decoded into out. The text
    // is valid UTF-8 already (uWS checks every text message).
    bool string_at(std::string &out) {
        pos_++;
        while (true) {
            if (pos_ == text_.size()) {
                fail_here("the message ends inside a string");
                return false;
            }
            unsigned char c = static_cast<unsigned char>(text_[pos_]);
            if (c == '"') {
                pos_++;
                return true;
            }
            if (c < 0x20) {
                fail_here("a control character must be escaped inside a string");
                return false;
            }
            if (c != '\\') {
                out.push_back(char(c));
                pos_++;
                continue;
            }
            pos_++;
            if (pos_ == text_.size()) {
                fail_here("the message ends inside a string");
                return false;
            }
            char escape = text_[pos_++];
            switch (escape) {
                case '"': out.push_back('"'); break;
                case '\\': out.push_back('\\'); break;
                case '/': out.push_back('/'); break;
                case 'b': out.push_back('\b'); break;
                case 'f': out.push_back('\f'); break;
                case 'n': out.push_back('\n'); break;
                case 'r': out.push_back('\r'); break;
                case 't': out.push_back('\t'); break;
                case 'u': {
                    const size_t escape_at = pos_ - 2;
                    std::optional<uint32_t> code = hex4();
                    if (!code) {
                        fail_here("\\u must be followed by four hexadecimal digits");
                        return false;
                    }
                    if (*code >= 0xDC00 && *code <= 0xDFFF) {
                        lone_surrogate(escape_at);
                        return false;
                    }
                    if (*code >= 0xD800 && *code <= 0xDBFF) {
                        const size_t low_at = pos_;
                        std::optional<uint32_t> low;
                        if (text_.substr(pos_, 2) == "\\u") {
                            pos_ += 2;
                            low = hex4();
                        }
                        if (!low || *low < 0xDC00 || *low > 0xDFFF) {
                            pos_ = low_at;
                            lone_surrogate(escape_at);
                            return false;
                        }
                        *code = 0x10000 + ((*code - 0xD800) << 10) + (*low - 0xDC00);
                    }
                    put_utf8(out, *code);
                    break;
                }
                default:
                    pos_--;
                    fail_here("unknown escape in a string (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)");
                    return false;
            }
        }
    }

    void lone_surrogate(size_t at) {
        fail("the escape " + std::string(text_.substr(at, 6)) + " at character " + std::to_string(character_at(at)) +
                 " is half of a UTF-16 surrogate pair and names no character; strings must be valid Unicode",
             JsonError::LoneSurrogate);
    }

    std::string_view text_;
    size_t pos_ = 0;
    size_t values_ = 0;
    JsonError error_{JsonError::Syntax, {}};
};

// A whole number from -2^63 to 2^64-1 written as such (no fraction or
// exponent), in canonical form; nothing otherwise.
std::optional<std::string> whole_number(const std::string &text) {
    if (text.find_first_of(".eE") != std::string::npos) return std::nullopt;
    if (text[0] == '-') {
        int64_t value;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
        return std::to_string(value);
    }
    uint64_t value;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return std::to_string(value);
}

// ---------------------------------------------------------------------------
// The server.

struct Symbol {
    std::string name;
    bool traded = false;
    Tick last{};
};

// What uWS keeps for each connection.
struct Conn {
    // Subscribed to "*": in the "*" topic and in no symbol's topic.
    bool all = false;
    // Symbols subscribed by name when not all, each in its own topic.
    std::unordered_set<uint32_t> named;
    // Already told the log that this connection went past maxBackpressure.
    bool dropped = false;
};

using WebSocket = uWS::WebSocket<false, true, Conn>;

struct Options {
    std::string host = "127.0.0.1";
    int port = 8080;
    double rate = 1000.0;
    size_t symbols = 100;
    uint64_t seed = 1;
    uint64_t timer_slack_us = 50;
    std::optional<size_t> max_backpressure;
};

class Peer {
public:
    Peer(const Options &options, uWS::App &app, const std::vector<SymbolSpec> &specs)
        : app_(app), simulator_(specs, options.rate, options.seed), pacer_(options.rate, monotonic_ns()),
          max_backpressure_(0) {
        for (const SymbolSpec &spec : specs) symbols_.push_back({spec.name});
        for (uint32_t id = 0; id < symbols_.size(); id++) ids_.emplace(symbols_[id].name, id);
        std::vector<uint32_t> every(symbols_.size());
        for (uint32_t id = 0; id < every.size(); id++) every[id] = id;
        all_subscribed_ = names_reply("subscribed", every);
        all_unsubscribed_ = names_reply("unsubscribed", every);
    }

    // Bytes of the largest reply one request can queue: a "*" subscribe's
    // list of names and a snapshot of every symbol.
    size_t largest_reply() const { return all_subscribed_.size() + symbols_.size() * 192; }

    size_t symbol_count() const { return symbols_.size(); }

    // One pass of the feed: every tick due now, formatted once and
    // published; uWS writes them out when the loop pass ends.
    void produce() {
        const uint64_t wall_now = wall_clock_ns(), mono_now = monotonic_ns();
        const uint64_t due = pacer_.due(mono_now);
        if (pacer_.skipped() > skipped_) {
            std::fprintf(stderr,
                         "uws-peer: the feed stalled and skipped %llu ticks to stay on schedule (%llu in all; "
                         "seq stays contiguous, the rate dipped); give the server more CPU\n",
                         (unsigned long long) (pacer_.skipped() - skipped_), (unsigned long long) pacer_.skipped());
            skipped_ = pacer_.skipped();
        }
        // Each tick is stamped with the time it was due, not the time the
        // loop got to it: a tick that waits for the loop's pass in progress
        // counts that wait in its latency, as it does in tickcast's.
        const uint64_t first = pacer_.released() - due;
        for (uint64_t i = 0; i < due; i++) {
            const uint64_t late = mono_now - std::min(mono_now, pacer_.due_at(first + i));
            Tick tick = simulator_.next(wall_now - late);
            Symbol &symbol = symbols_[tick.symbol];
            symbol.last = tick;
            symbol.traded = true;
            frame_.clear();
            write_tick_json(frame_, false, symbol.name, tick);
            // Each publish finds no topic, and costs nothing more, while
            // nobody subscribes to it.
            app_.publish(symbol.name, frame_, uWS::OpCode::TEXT, false);
            app_.publish(ALL_TOPIC, frame_, uWS::OpCode::TEXT, false);
        }
    }

    // Nanoseconds until the next tick is due, at least 1.
    uint64_t next_delay_ns() const {
        const uint64_t now = monotonic_ns(), deadline = pacer_.next_deadline();
        return deadline > now ? deadline - now : 1;
    }

    void on_message(WebSocket *ws, std::string_view message, uWS::OpCode opcode) {
        if (opcode != uWS::OpCode::TEXT) {
            send(ws, error_reply("binary_not_supported", "binary frames are not supported; send JSON as text frames"));
            return;
        }
        JsonReader reader(message);
        std::optional<Json> request = reader.read();
        if (!request) {
            const JsonError &error = reader.error();
            send(ws, error_reply(error.kind == JsonError::LoneSurrogate ? "bad_request" : "bad_json", error.message));
            return;
        }
        if (request->kind != Json::Object) {
            return bad_request(ws, R"(a message must be a JSON object such as {"op":"subscribe","symbols":["AAPL"]})");
        }
        const Json *op = request->get("op");
        if (!op || op->kind != Json::String) {
            return bad_request(ws, R"(the message has no "op" string; use "subscribe", "unsubscribe" or "ping")");
        }
        if (op->text == "ping") return ping(ws, request->get("id"));
        if (op->text != "subscribe" && op->text != "unsubscribe") {
            send(ws, error_reply("unknown_op", "unknown op " + quoted(truncate(op->text, 40)) +
                                                   R"(; the ops are "subscribe", "unsubscribe" and "ping")"));
            return;
        }
        std::vector<std::string_view> names;
        const Json *symbols = request->get("symbols");
        bool listed = symbols && symbols->kind == Json::Array && !symbols->items.empty();
        if (listed) {
            for (const Json &item : symbols->items) {
                if (item.kind != Json::String) listed = false;
                names.push_back(item.text);
            }
        }
        if (!listed) {
            return bad_request(ws, R"("symbols" must be a non-empty array of symbol names, e.g. ["AAPL","MSFT"] or ["*"])");
        }
        if (op->text == "unsubscribe") return unsubscribe(ws, names);
        // The options this server does not implement are refused rather
        // than ignored, so that no benchmark counts them as applied.
        if (request->get("from")) {
            return bad_request(ws, R"(this server keeps no history and cannot resume: subscribe without "from")");
        }
        if (request->get("max_hz")) {
            return bad_request(ws, R"(this server does not throttle: subscribe without "max_hz")");
        }
        if (const Json *batch = request->get("batch")) {
            if (batch->kind != Json::Bool) return bad_request(ws, R"("batch" must be true or false)");
            if (batch->boolean) {
                return bad_request(ws, R"(this server sends no batches: subscribe without "batch" (or with false))");
            }
        }
        subscribe(ws, names);
    }

    void on_dropped(WebSocket *ws) {
        Conn *conn = ws->getUserData();
        if (conn->dropped) return;
        conn->dropped = true;
        dropped_ += 1;
        if (dropped_ <= 10 || dropped_ % 1000 == 0) {
            std::fprintf(stderr,
                         "uws-peer: a client let more than %u bytes of output wait; it is closed "
                         "(%llu so far)\n",
                         max_backpressure_, (unsigned long long) dropped_);
        }
    }

    void set_max_backpressure(unsigned bytes) { max_backpressure_ = bytes; }

private:
    void send(WebSocket *ws, std::string_view text) { ws->send(text, uWS::OpCode::TEXT); }

    void bad_request(WebSocket *ws, std::string_view message) { send(ws, error_reply("bad_request", message)); }

    void ping(WebSocket *ws, const Json *id) {
        std::string reply = R"({"type":"pong")";
        if (id) {
            reply.append(R"(,"id":)");
            if (id->kind == Json::String) {
                put_json_string(reply, id->text);
            } else if (std::optional<std::string> whole; id->kind == Json::Number && (whole = whole_number(id->text))) {
                reply.append(*whole);
            } else {
                return bad_request(ws, R"("id" must be a string or a whole number from -2^63 to 2^64-1, e.g. {"op":"ping","id":7}; it is echoed exactly)");
            }
        }
        reply.push_back('}');
        send(ws, reply);
    }

    std::string names_reply(std::string_view type, const std::vector<uint32_t> &ids) const {
        std::string out = R"({"type":")";
        out.append(type);
        out.append(R"(","symbols":[)");
        for (size_t i = 0; i < ids.size(); i++) {
            if (i) out.push_back(',');
            put_json_string(out, symbols_[ids[i]].name);
        }
        out.append("]}");
        return out;
    }

    // Splits names into "*" and known ids (deduplicated, in request order),
    // replying unknown_symbol for the others.
    bool resolve(WebSocket *ws, const std::vector<std::string_view> &names, std::vector<uint32_t> &ids) {
        bool star = false;
        std::unordered_set<uint32_t> seen;
        std::vector<std::string> unknown;
        for (std::string_view name : names) {
            if (name == ALL_TOPIC) {
                star = true;
            } else if (auto found = ids_.find(name); found != ids_.end()) {
                if (seen.insert(found->second).second) ids.push_back(found->second);
            } else if (unknown.size() < 10) {
                unknown.push_back(quoted(truncate(name, 24)));
            }
        }
        if (!unknown.empty()) {
            std::string message = "unknown symbol ";
            for (size_t i = 0; i < unknown.size(); i++) {
                if (i) message.append(", ");
                message.append(unknown[i]);
            }
            message.append(R"(; the reply to a subscribe to "*" lists the symbols this server carries)");
            send(ws, error_reply("unknown_symbol", message));
        }
        return star;
    }

    void subscribe(WebSocket *ws, const std::vector<std::string_view> &names) {
        std::vector<uint32_t> ids;
        const bool star = resolve(ws, names, ids);
        if (!star && ids.empty()) return;
        Conn *conn = ws->getUserData();
        std::vector<uint32_t> added;
        if (conn->all) {
            // Already subscribed to everything: nothing is new.
        } else if (star) {
            for (uint32_t id = 0; id < symbols_.size(); id++) {
                if (!conn->named.count(id)) added.push_back(id);
            }
        } else {
            for (uint32_t id : ids) {
                if (!conn->named.count(id)) added.push_back(id);
            }
            if (conn->named.size() + added.size() > MAX_SUBSCRIPTIONS) {
                send(ws, error_reply("too_many_symbols",
                                     "this would make " + std::to_string(conn->named.size() + added.size()) +
                                         " subscriptions on one connection, the limit is " + std::to_string(MAX_SUBSCRIPTIONS) +
                                         R"(; unsubscribe some, subscribe to "*", or open another connection)"));
                return;
            }
        }
        // Ticks published before this point are not this request's: the
        // snapshots below carry each symbol's state up to now, and the
        // topics deliver every tick after it.
        if (!conn->all && star) {
            for (uint32_t id : conn->named) ws->unsubscribe(symbols_[id].name);
            conn->named.clear();
            conn->all = true;
            ws->subscribe(ALL_TOPIC);
        } else if (!conn->all) {
            for (uint32_t id : added) {
                conn->named.insert(id);
                ws->subscribe(symbols_[id].name);
            }
        }
        // uWS sends whatever of the earlier topics waits for this client
        // first, so the reply and the snapshots follow the ticks before.
        send(ws, added.size() == symbols_.size() ? std::string_view(all_subscribed_) : names_reply("subscribed", added));
        std::string snapshot;
        for (uint32_t id : added) {
            const Symbol &symbol = symbols_[id];
            if (!symbol.traded) continue;
            snapshot.clear();
            write_tick_json(snapshot, true, symbol.name, symbol.last);
            send(ws, snapshot);
        }
    }

    void unsubscribe(WebSocket *ws, const std::vector<std::string_view> &names) {
        std::vector<uint32_t> ids;
        const bool star = resolve(ws, names, ids);
        if (!star && ids.empty()) return;
        Conn *conn = ws->getUserData();
        std::vector<uint32_t> removed;
        if (star) {
            if (conn->all) {
                removed.resize(symbols_.size());
                for (uint32_t id = 0; id < removed.size(); id++) removed[id] = id;
            } else {
                removed.assign(conn->named.begin(), conn->named.end());
                std::sort(removed.begin(), removed.end());
            }
        } else if (conn->all) {
            removed = ids;
        } else {
            for (uint32_t id : ids) {
                if (conn->named.count(id)) removed.push_back(id);
            }
        }
        if (conn->all) {
            // Off "*": every symbol not removed by its own name.
            ws->unsubscribe(ALL_TOPIC);
            conn->all = false;
            if (!star) {
                std::unordered_set<uint32_t> gone(removed.begin(), removed.end());
                for (uint32_t id = 0; id < symbols_.size(); id++) {
                    if (gone.count(id)) continue;
                    conn->named.insert(id);
                    ws->subscribe(symbols_[id].name);
                }
            }
        } else {
            for (uint32_t id : removed) {
                conn->named.erase(id);
                ws->unsubscribe(symbols_[id].name);
            }
        }
        // Ticks of these symbols already queued go out before the reply;
        // none follows it.
        send(ws, removed.size() == symbols_.size() ? std::string_view(all_unsubscribed_)
                                                   : names_reply("unsubscribed", removed));
    }

    uWS::App &app_;
    // Never resized after construction: ids_ holds views of the names.
    std::vector<Symbol> symbols_;
    std::unordered_map<std::string_view, uint32_t> ids_;
    Simulator simulator_;
    Pacer pacer_;
    std::string frame_;
    std::string all_subscribed_, all_unsubscribed_;
    uint64_t skipped_ = 0;
    uint64_t dropped_ = 0;
    unsigned max_backpressure_;
};

}  // namespace

namespace {

Peer *peer = nullptr;
us_timer_t *feed_timer = nullptr;

// Added to each wait for a deadline (--timer-slack-us).
uint64_t timer_slack_ns = 50000;

// The feed's timer is one of the loop's own (us_timer), armed once per
// pass for the next tick's deadline. us_timer_set counts whole
// milliseconds, which would release up to a millisecond of ticks at once
// (50 at 50,000 ticks/s); on Linux the timer is a timerfd in the loop's
// epoll set, so it is re-armed to the nanosecond instead. tickcast's feed
// thread sleeps to each deadline in a futex wait, which Linux lets end up
// to the thread's timer slack late (50 µs by default); a timerfd has no
// slack, so the same 50 µs is added here, and both feeds release ticks in
// batches of the same size.
void feed_pass(us_timer_t *timer) {
    peer->produce();
    const uint64_t delay = peer->next_delay_ns() + timer_slack_ns;
#ifdef LIBUS_USE_EPOLL
    itimerspec next{};
    next.it_value.tv_sec = time_t(delay / 1000000000);
    next.it_value.tv_nsec = long(delay % 1000000000);
    timerfd_settime(us_poll_fd((us_poll_t *) timer), 0, &next, nullptr);
#else
    us_timer_set(timer, feed_pass, int(std::max<uint64_t>((delay + 999999) / 1000000, 1)), 0);
#endif
}

[[noreturn]] void usage_error(const std::string &message) {
    std::fprintf(stderr, "uws-peer: %s\nrun uws-peer --help for the options\n", message.c_str());
    std::exit(2);
}

const char USAGE[] =
    "uws-peer: a uWebSockets pub/sub server speaking tickcast's client protocol (WebSocket at /ws)\n"
    "over the same simulated feed as tickcast's built-in one.\n"
    "\n"
    "Options:\n"
    "  --host H                  address to listen on (default 127.0.0.1)\n"
    "  --port P                  port to listen on, 0 for any free one (default 8080)\n"
    "  --rate R                  total ticks per second across all symbols (default 1000)\n"
    "  --symbols N               symbols the simulator trades, real US tickers first (default 100)\n"
    "  --seed S                  seed of the simulator (default 1)\n"
    "  --timer-slack-us US       added to each wait for the next tick's deadline, as Linux\n"
    "                            lets a sleeping thread wake late (default 50)\n"
    "  --max-backpressure BYTES  output a client may leave unread before it is closed\n"
    "                            (default 262144 plus the largest reply one request can queue)\n"
    "  --help                    print this\n";

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i < argc; i++) {
        std::string_view flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::fputs(USAGE, stdout);
            std::exit(0);
        }
        if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
        const std::string value = argv[++i];
        const char *begin = value.data(), *end = value.data() + value.size();
        if (flag == "--host") {
            options.host = value;
        } else if (flag == "--port") {
            int port;
            auto [at, ec] = std::from_chars(begin, end, port);
            if (ec != std::errc() || at != end || port < 0 || port > 65535) {
                usage_error("--port " + value + " is not a port; give a number from 0 to 65535");
            }
            options.port = port;
        } else if (flag == "--rate") {
            char *at;
            double rate = std::strtod(value.c_str(), &at);
            if (value.empty() || *at || !(rate > 0.0 && rate <= 50e6)) {
                usage_error("--rate " + value + " is out of range: give a rate above 0 and at most 50000000 ticks per second");
            }
            options.rate = rate;
        } else if (flag == "--symbols") {
            size_t symbols;
            auto [at, ec] = std::from_chars(begin, end, symbols);
            if (ec != std::errc() || at != end || symbols < 1 || symbols > 100000) {
                usage_error("--symbols " + value + " is out of range: give a number from 1 to 100000");
            }
            options.symbols = symbols;
        } else if (flag == "--seed") {
            uint64_t seed;
            auto [at, ec] = std::from_chars(begin, end, seed);
            if (ec != std::errc() || at != end) usage_error("--seed " + value + " is not a whole number");
            options.seed = seed;
        } else if (flag == "--timer-slack-us") {
            uint64_t slack;
            auto [at, ec] = std::from_chars(begin, end, slack);
            if (ec != std::errc() || at != end || slack > 1000000) {
                usage_error("--timer-slack-us " + value + " is out of range: give microseconds from 0 to 1000000");
            }
            options.timer_slack_us = slack;
        } else if (flag == "--max-backpressure") {
            size_t bytes;
            auto [at, ec] = std::from_chars(begin, end, bytes);
            if (ec != std::errc() || at != end || bytes < 1024 || bytes > (size_t(1) << 31)) {
                usage_error("--max-backpressure " + value + " is out of range: give a number of bytes from 1024 to 2147483648");
            }
            options.max_backpressure = bytes;
        } else {
            usage_error("unknown option " + std::string(flag));
        }
    }
    return options;
}

}  // namespace

int main(int argc, char **argv) {
    const Options options = parse_options(argc, argv);
    const std::vector<SymbolSpec> specs = universe(options.symbols);

    uWS::App app;
    Peer server(options, app, specs);
    peer = &server;

    // As tickcast bounds a connection's output: its queued ticks
    // (--max-outbox-bytes) plus at most one request's replies over it (a
    // "*" subscribe's names and snapshots), so that subscribing never
    // trips the limit on its own.
    const size_t max_backpressure =
        std::min<size_t>(options.max_backpressure.value_or(DEFAULT_MAX_BACKPRESSURE + server.largest_reply()), UINT32_MAX);
    server.set_max_backpressure(unsigned(max_backpressure));

    uWS::App::WebSocketBehavior<Conn> behavior;
    behavior.compression = uWS::DISABLED;
    behavior.maxPayloadLength = MAX_MESSAGE_BYTES;
    // uWS pings a connection that sent nothing for 44 s and closes it 16 s
    // later without an answer (tickcast: pings every 30 s, closes after a
    // silent interval).
    behavior.idleTimeout = 60;
    behavior.maxBackpressure = unsigned(max_backpressure);
    // A client past maxBackpressure loses the message and is closed: uWS
    // shuts the socket's read side and closes it on the EOF that follows,
    // without a close frame.
    behavior.closeOnBackpressureLimit = true;
    behavior.resetIdleTimeoutOnSend = false;
    behavior.sendPingsAutomatically = true;
    behavior.message = [](WebSocket *ws, std::string_view message, uWS::OpCode op) { peer->on_message(ws, message, op); };
    behavior.dropped = [](WebSocket *ws, std::string_view, uWS::OpCode) { peer->on_dropped(ws); };

    app.ws<Conn>("/ws", std::move(behavior))
        .get("/ws", [](auto *res, auto *) {
            res->writeStatus("426 Upgrade Required")
                ->writeHeader("Content-Type", "text/plain")
                ->end("this is a WebSocket endpoint: connect with a WebSocket client to ws://HOST:PORT/ws\n");
        })
        .any("/*", [](auto *res, auto *) {
            res->writeStatus("404 Not Found")
                ->writeHeader("Content-Type", "text/plain")
                ->end("not found: this server has only the WebSocket endpoint /ws\n");
        });

    int port = -1;
    app.listen(options.host, options.port, LIBUS_LISTEN_EXCLUSIVE_PORT, [&](us_listen_socket_t *socket) {
        if (socket) port = us_socket_local_port(0, (us_socket_t *) socket);
    });
    if (port < 0) {
        std::fprintf(stderr,
                     "uws-peer: cannot listen on %s:%d: the port is taken or the address is not this machine's; "
                     "give another --port or --host\n",
                     options.host.c_str(), options.port);
        return 1;
    }

    timer_slack_ns = options.timer_slack_us * 1000;
    feed_timer = us_create_timer((us_loop_t *) uWS::Loop::get(), 0, 0);
    us_timer_set(feed_timer, feed_pass, 1, 0);

    std::printf("listening on %s:%d (%zu symbols, %g ticks/s, max backpressure %zu bytes)\n", options.host.c_str(), port,
                server.symbol_count(), options.rate, max_backpressure);
    std::fflush(stdout);
    app.run();
    return 0;
}
