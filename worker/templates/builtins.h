// Internal to the template engine (template.h is its API): what a template
// can do to values, as Jinja and Python define it: item, attribute and slice
// access, the string and dict methods, the filters, the tests and the
// operators. Each throws TemplateError for what it does not support or
// cannot apply, naming it.
#ifndef LATHE_WORKER_TEMPLATES_BUILTINS_H_
#define LATHE_WORKER_TEMPLATES_BUILTINS_H_

#include <set>
#include <string>
#include <vector>

#include "worker/templates/value.h"

namespace lathe {
namespace templates {

// The filter and test names the parser accepts; any other is a parse error,
// so an unsupported one fails even in a branch that never runs.
const std::set<std::string>& KnownFilters();
const std::set<std::string>& KnownTests();

// seq[a:b:c] of a list or string; an undefined or none part is absent.
Value Slice(const Value& seq, const Value& a, const Value& b, const Value& c);
// obj[key]: undefined for a missing key or an index out of range.
Value Item(const Value& obj, const Value& key);
// obj.name: a dict's item, or a bound method of a dict or string.
Value Attr(const Value& obj, const std::string& name);
// Calls the bound method `name` of a string or dict.
Value CallMethod(const Value& self, const std::string& name,
                 const std::vector<Value>& args);

// v | n(args)
Value ApplyFilter(const std::string& n, const Value& v,
                  const std::vector<Value>& args);
// v is n
bool ApplyTest(const std::string& n, const Value& v);
// a op b, for every binary operator but the short-circuiting "and" and "or".
Value ApplyOperator(const std::string& op, const Value& a, const Value& b);

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_BUILTINS_H_
