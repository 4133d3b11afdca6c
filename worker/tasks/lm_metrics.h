// Language-model metrics. No LibTorch.
#ifndef LATHE_WORKER_TASKS_LM_METRICS_H_
#define LATHE_WORKER_TASKS_LM_METRICS_H_

#include <cstdint>
#include <vector>

namespace lathe {

// exp(mean_loss), the loss being the mean token cross-entropy in nats. The
// loss is capped at 700 so that the result stays finite (JSON has no
// infinity): a perplexity of e^700 means the same as infinity in practice.
// A NaN loss gives NaN.
double Perplexity(double mean_loss);

// Fraction of positions with gold != ignore_index where predicted == gold;
// positions past the shorter vector are ignored; 0 when nothing is counted.
double TokenAccuracy(const std::vector<int64_t>& predicted,
                     const std::vector<int64_t>& gold,
                     int64_t ignore_index = -100);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_LM_METRICS_H_
