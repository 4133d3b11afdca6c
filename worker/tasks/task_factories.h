// Internal to worker/tasks: one factory per task, each defined in the task's
// own file and listed in task.cc's table.
#ifndef LATHE_WORKER_TASKS_TASK_FACTORIES_H_
#define LATHE_WORKER_TASKS_TASK_FACTORIES_H_

#include <memory>

#include "worker/tasks/task.h"

namespace lathe {
namespace tasks {

std::unique_ptr<Task> NewTextClassificationTask();   // text_classification.cc
std::unique_ptr<Task> NewTextRegressionTask();       // text_regression.cc
std::unique_ptr<Task> NewTokenClassificationTask();  // token_classification.cc
std::unique_ptr<Task> NewQuestionAnsweringTask();    // question_answering.cc
std::unique_ptr<Task> NewCausalLmTask();             // causal_lm.cc
std::unique_ptr<Task> NewDpoTask();                  // dpo.cc
std::unique_ptr<Task> NewMaskedLmTask();             // masked_lm.cc
std::unique_ptr<Task> NewImageClassificationTask();  // image_classification.cc
std::unique_ptr<Task> NewAudioClassificationTask();  // audio_classification.cc
std::unique_ptr<Task> NewSpeechRecognitionTask();    // speech_recognition.cc

}  // namespace tasks
}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_TASK_FACTORIES_H_
