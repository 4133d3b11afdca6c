#include "worker/train/batch_order.h"

#include <algorithm>
#include <random>
#include <utility>

namespace lathe {
namespace {

void Shuffle(std::vector<size_t>& v, std::mt19937_64& rng) {
  // Fisher-Yates with a fixed reduction, identical on every standard library.
  for (size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[rng() % i]);
  }
}

}  // namespace

uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<size_t> EpochOrder(int64_t seed, int64_t epoch, size_t n) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(
      Mix64(Mix64(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch)));
  Shuffle(order, rng);
  return order;
}

void GroupByLength(std::vector<size_t>& order,
                   const std::vector<int64_t>& lengths, size_t batch,
                   size_t mega, int64_t seed, int64_t epoch) {
  std::mt19937_64 rng(Mix64(Mix64(static_cast<uint64_t>(seed) ^ 0x6c656e67ull) ^
                            static_cast<uint64_t>(epoch)));
  for (size_t begin = 0; begin < order.size(); begin += mega) {
    const size_t end = std::min(order.size(), begin + mega);
    std::stable_sort(
        order.begin() + begin, order.begin() + end,
        [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
    std::vector<size_t> chunks((end - begin) / batch);
    for (size_t i = 0; i < chunks.size(); ++i) chunks[i] = i;
    Shuffle(chunks, rng);
    std::vector<size_t> sorted(order.begin() + begin,
                               order.begin() + begin + chunks.size() * batch);
    for (size_t i = 0; i < chunks.size(); ++i) {
      std::copy(sorted.begin() + chunks[i] * batch,
                sorted.begin() + (chunks[i] + 1) * batch,
                order.begin() + begin + i * batch);
    }
  }
}

}  // namespace lathe
