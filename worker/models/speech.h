// Wav2Vec2 (model_type "wav2vec2"), as Hugging Face's Wav2Vec2Model,
// Wav2Vec2ForCTC (HeadKind::kCtc) and Wav2Vec2ForSequenceClassification
// (HeadKind::kSequenceClassification) define it. The backbone is under
// "wav2vec2." with a head, without a prefix for kNone:
//   feature_extractor.conv_layers.N.conv (Conv1d; bias with conv_bias),
//     .layer_norm (GroupNorm on layer 0 with feat_extract_norm "group",
//     LayerNorm over channels on every layer with "layer"), activation;
//   feature_projection.{layer_norm, projection} (then feat_proj_dropout);
//   masked_spec_embed [hidden] (only when mask_time_prob or
//     mask_feature_prob is above 0): what SpecAugment writes over masked
//     frames while training;
//   encoder.pos_conv_embed.conv.{weight_g [1, 1, K], weight_v
//     [hidden, hidden / groups, K], bias}: a grouped Conv1d with weight
//     normalisation over dimension 2 (checkpoints that name them
//     parametrizations.weight.original0/1 load too), padding K / 2, the
//     last frame dropped when K is even, then the activation, added to the
//     frames;
//   encoder.layer_norm, encoder.layers.N.{attention.{q,k,v,out}_proj,
//     layer_norm, feed_forward.{intermediate_dense, output_dense},
//     final_layer_norm}: post-LayerNorm blocks after encoder.layer_norm, or
//     with do_stable_layer_norm pre-LayerNorm blocks before it.
// Heads: lm_head (CTC logits over the characters, after final_dropout), or
// projector then classifier on the frames' mean (padding frames left out).
// Pre-training tensors (quantizer.*, project_hid.*, project_q.*) are
// skipped on load. Inputs: ModelInputs::input_values [B, samples] with
// attention_mask [B, samples] (1 for real samples) or undefined.
#ifndef LATHE_WORKER_MODELS_SPEECH_H_
#define LATHE_WORKER_MODELS_SPEECH_H_

#include <torch/torch.h>

#include <cstdint>

#include "worker/models/model_config.h"

namespace lathe {

// The number of frames the feature encoder makes of `samples` samples
// (each layer: floor((n - kernel) / stride) + 1; 0 when too short).
int64_t Wav2Vec2FrameCount(const ModelConfig& config, int64_t samples);
// The same for a tensor of lengths (int64 [B]).
torch::Tensor Wav2Vec2FrameCounts(const ModelConfig& config,
                                  const torch::Tensor& samples);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_SPEECH_H_
