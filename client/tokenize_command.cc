#include "client/tokenize_command.h"

#include <istream>
#include <ostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizers/tokenizer.h"

namespace lathe::client {

int RunTokenizeCommand(const std::string& dir, bool jsonl,
                       bool add_special_tokens, std::istream& in,
                       std::ostream& out, std::ostream& err) {
  auto tok = Tokenizer::FromDirectory(dir);
  if (!tok.ok()) {
    err << "lathe tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  std::string line, text, buf;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (jsonl) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("text")) j = j["text"];
      if (!j.is_string()) {
        err << "lathe tokenize: line " << line_no
            << ": want a JSON string or an object with a \"text\" string\n";
        return 1;
      }
      text = j.get<std::string>();
    } else {
      text = line;
      if (!text.empty() && text.back() == '\r') text.pop_back();
    }
    const TokenizedText t =
        (*tok)->Encode(text, std::nullopt, add_special_tokens);
    const auto offsets = ByteToCharOffsets(text, t.offsets);
    buf.assign("{\"ids\":[");
    for (size_t i = 0; i < t.ids.size(); ++i) {
      if (i > 0) buf += ',';
      absl::StrAppend(&buf, t.ids[i]);
    }
    buf += "],\"offsets\":[";
    for (size_t i = 0; i < offsets.size(); ++i) {
      if (i > 0) buf += ',';
      absl::StrAppend(&buf, "[", offsets[i].first, ",", offsets[i].second, "]");
    }
    buf += "]}\n";
    out << buf;
  }
  out.flush();
  return out ? 0 : 1;
}

}  // namespace lathe::client
