// Training hyperparameters: names, defaults and ranges, shared by the server
// (which validates a submitted job) and the training child (which uses them).
#ifndef LATHE_COMMON_PARAMS_H_
#define LATHE_COMMON_PARAMS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace lathe {

struct TrainParams {
  int64_t epochs = 3;             // 1..1000
  int64_t batch_size = 32;        // 1..4096
  double learning_rate = 1e-4;    // (0, 1]
  double warmup_ratio = 0.1;      // [0, 1]
  double weight_decay = 0.01;     // [0, 1]
  int64_t max_seq_length = 128;   // 8..512
  int64_t eval_steps = 100;       // 0 = only at the end
  int64_t save_steps = 500;       // 0 = only at the end
  int64_t logging_steps = 10;     // 1..1000000
  int64_t seed = 42;              // any 64-bit integer
  double max_grad_norm = 1.0;     // [0, 1e6]; 0 disables clipping
  double validation_split = 0.1;  // [0, 0.5]; used without validation data
  int64_t max_steps = 0;          // 0 = epochs decide; else stop there
  int64_t num_threads = 0;        // 0 = every core the machine gives
};

// Parses `params` (name -> decimal text) over the defaults. An unknown name
// or a value out of range is INVALID_ARGUMENT naming `params[NAME]`.
absl::StatusOr<TrainParams> ParseTrainParams(
    const std::map<std::string, std::string>& params);

// Names of every accepted parameter, for help texts.
const char* TrainParamsHelp();

}  // namespace lathe

#endif  // LATHE_COMMON_PARAMS_H_
