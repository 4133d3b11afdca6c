#include "worker/tasks/squad_metrics.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "absl/strings/ascii.h"

namespace lathe {
namespace {

// Python's string.punctuation.
bool IsPunct(unsigned char c) { return c < 0x80 && absl::ascii_ispunct(c); }

// Python's str.split() whitespace within ASCII, including the separators
// 0x1c..0x1f that it also treats as whitespace.
bool IsSpace(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

// The regex \w within ASCII; bytes of multi-byte UTF-8 sequences count as
// word characters (they are letters in most answers).
bool IsWordChar(unsigned char c) {
  return c >= 0x80 || absl::ascii_isalnum(c) || c == '_';
}

std::vector<std::string> SplitWhitespace(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !IsSpace(s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string> Tokens(const std::string& s) {
  return SplitWhitespace(NormalizeSquadAnswer(s));
}

// The gold answers that survive normalisation; {""} when none do.
std::vector<std::string> EffectiveGold(const std::vector<std::string>& gold) {
  std::vector<std::string> out;
  for (const std::string& g : gold) {
    if (!NormalizeSquadAnswer(g).empty()) out.push_back(g);
  }
  if (out.empty()) out.push_back("");
  return out;
}

// As the official script, by the raw list: a question whose only answers
// normalise to nothing still counts as answerable.
bool HasAnswer(const SquadQuestion& q) { return !q.gold_answers.empty(); }

double Mean(double sum, int64_t n) { return n > 0 ? sum / n : 0.0; }

}  // namespace

std::string NormalizeSquadAnswer(const std::string& s) {
  // Lowercase and drop punctuation in one pass.
  std::string text;
  text.reserve(s.size());
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (IsPunct(c)) continue;
    text.push_back(absl::ascii_tolower(c));
  }
  // Articles that stand as whole words become a space.
  std::string no_articles;
  no_articles.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const bool word_start =
        IsWordChar(text[i]) && (i == 0 || !IsWordChar(text[i - 1]));
    if (word_start) {
      size_t j = i;
      while (j < text.size() && IsWordChar(text[j])) ++j;
      const std::string word = text.substr(i, j - i);
      if (word == "a" || word == "an" || word == "the") {
        no_articles.push_back(' ');
      } else {
        no_articles.append(word);
      }
      i = j;
      continue;
    }
    no_articles.push_back(text[i++]);
  }
  std::string out;
  for (const std::string& w : SplitWhitespace(no_articles)) {
    if (!out.empty()) out.push_back(' ');
    out.append(w);
  }
  return out;
}

double SquadExactMatch(const std::string& gold, const std::string& predicted) {
  return NormalizeSquadAnswer(gold) == NormalizeSquadAnswer(predicted) ? 1.0
                                                                       : 0.0;
}

double SquadF1(const std::string& gold, const std::string& predicted) {
  const std::vector<std::string> g = Tokens(gold), p = Tokens(predicted);
  if (g.empty() || p.empty()) return g.empty() && p.empty() ? 1.0 : 0.0;
  std::map<std::string, int64_t> gold_counts;
  for (const std::string& t : g) ++gold_counts[t];
  int64_t same = 0;
  for (const std::string& t : p) {
    auto it = gold_counts.find(t);
    if (it != gold_counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / p.size();
  const double recall = static_cast<double>(same) / g.size();
  return 2 * precision * recall / (precision + recall);
}

ThresholdResult FindBestNoAnswerThreshold(
    const std::vector<SquadQuestion>& questions,
    const std::vector<double>& scores) {
  ThresholdResult r;
  const size_t n = std::min(questions.size(), scores.size());
  if (n == 0) return r;
  double current = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!HasAnswer(questions[i])) current += 1;
  }
  double best = current;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return questions[a].no_answer_score < questions[b].no_answer_score;
  });
  for (size_t i : order) {
    if (HasAnswer(questions[i])) {
      current += scores[i];
    } else if (!questions[i].prediction.empty()) {
      current -= 1;
    }
    if (current > best) {
      best = current;
      r.threshold = questions[i].no_answer_score;
    }
  }
  r.score = best / static_cast<double>(n);
  return r;
}

SquadMetrics ComputeSquadMetrics(const std::vector<SquadQuestion>& questions,
                                 bool search_threshold) {
  SquadMetrics m;
  if (questions.empty()) return m;
  std::vector<double> exact(questions.size()), f1(questions.size());
  double has_em = 0, has_f1 = 0, no_em = 0, no_f1 = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    const SquadQuestion& q = questions[i];
    double best_em = 0, best_f1 = 0;
    for (const std::string& g : EffectiveGold(q.gold_answers)) {
      best_em = std::max(best_em, SquadExactMatch(g, q.prediction));
      best_f1 = std::max(best_f1, SquadF1(g, q.prediction));
    }
    exact[i] = best_em;
    f1[i] = best_f1;
    if (HasAnswer(q)) {
      ++m.has_ans_total;
      has_em += best_em;
      has_f1 += best_f1;
    } else {
      ++m.no_ans_total;
      no_em += best_em;
      no_f1 += best_f1;
    }
  }
  m.total = static_cast<int64_t>(questions.size());
  m.exact = Mean(has_em + no_em, m.total);
  m.f1 = Mean(has_f1 + no_f1, m.total);
  m.has_ans_exact = Mean(has_em, m.has_ans_total);
  m.has_ans_f1 = Mean(has_f1, m.has_ans_total);
  m.no_ans_exact = Mean(no_em, m.no_ans_total);
  m.no_ans_f1 = Mean(no_f1, m.no_ans_total);
  if (search_threshold) {
    const ThresholdResult e = FindBestNoAnswerThreshold(questions, exact);
    const ThresholdResult f = FindBestNoAnswerThreshold(questions, f1);
    m.best_exact = e.score;
    m.best_exact_thresh = e.threshold;
    m.best_f1 = f.score;
    m.best_f1_thresh = f.threshold;
  }
  return m;
}

}  // namespace lathe
