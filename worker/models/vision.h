// Internal to worker/models: the image families as TaskModelImpl
// subclasses. Both take ModelInputs::pixel_values [B, num_channels, H, W]
// float (already normalised); the text inputs are ignored.
//
// ViT (model_type "vit"), mirroring Hugging Face's ViTForImageClassification
// (HeadKind::kSequenceClassification, backbone under "vit.") and ViTModel
// (HeadKind::kNone, backbone names without a prefix, plus pooler.dense):
//   embeddings.cls_token [1, 1, hidden]
//   embeddings.position_embeddings [1, (image_size / patch_size)^2 + 1, hidden]
//   embeddings.patch_embeddings.projection (Conv2d, kernel = stride = patch)
//   encoder.layer.N.{layernorm_before, attention.attention.{query,key,value},
//     attention.output.dense, layernorm_after, intermediate.dense,
//     output.dense}   (pre-norm blocks)
//   layernorm, and classifier (Linear on the [CLS] token's final state).
// H and W must equal image_size (no position interpolation). Forward
// returns logits [B, num_labels], or the final hidden states [B, T, hidden]
// for kNone.
//
// lathe-cnn (model_type "lathe-cnn"), Lathe's small convolutional network.
// config.json keys: image_size (the input side the data is resized to,
// default 32), num_channels (3), hidden_sizes (output channels per block,
// default [16, 32, 64]), hidden_act ("relu"), initializer_range (0.02),
// classifier_dropout (0), pooling ("mean", or "flatten"). Layout
// (classifier: "cnn." prefix on the backbone; kNone: no prefix):
//   cnn.encoder.N.conv (Conv2d, 3x3, padding 1, with bias), then the
//     activation and a 2x2 max pool (skipped once a side is below 2);
//   "mean": average pooling over H and W; "flatten": the last map as it is,
//     channel by row by column (then H and W must be image_size);
//   classifier (Linear, hidden_sizes.back() (x side x side when
//     flattened) -> num_labels).
// With "mean" any H, W >= 1 works. Forward returns logits
// [B, num_labels], or the pooled or flattened features for kNone. The
// architecture class names are "LatheCnnForImageClassification" and
// "LatheCnnModel".
//
// Dropout is active only in train() mode. Wrong input shapes throw
// c10::Error (TORCH_CHECK), as torch modules do.
#ifndef LATHE_WORKER_MODELS_VISION_H_
#define LATHE_WORKER_MODELS_VISION_H_

#include "absl/status/statusor.h"
#include "worker/models/family_models.h"
#include "worker/models/model.h"

#endif  // LATHE_WORKER_MODELS_VISION_H_
