// FakeClock: a manually advanced clock in milliseconds, standing in for the
// wall clock that JobManager reads (heartbeat timeouts, timestamps).
#ifndef LATHE_TESTS_SUPPORT_FAKE_CLOCK_H_
#define LATHE_TESTS_SUPPORT_FAKE_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <functional>

namespace lathe {

class FakeClock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  void Advance(int64_t ms) { now_ += ms; }
  std::function<int64_t()> AsClock() {
    return [this] { return now_.load(); };
  }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace lathe

#endif  // LATHE_TESTS_SUPPORT_FAKE_CLOCK_H_
