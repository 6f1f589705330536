//! Rules: named boolean expressions in CEL, the scorer of a detector without a model.
//!
//! A rule is a name and an expression in the [Common Expression Language] (the language of
//! Kubernetes admission policies and Envoy), e.g. `hot = "temperature > 40.0"`. A [`RuleSet`]
//! compiles its rules once ([`RuleSet::compile`]); [`RuleSet::evaluate`] runs every rule on one
//! record and returns a [`Verdict`]: the rules that fired, in the order they were given. A record
//! is anomalous when any rule fired. A rule that cannot be evaluated on a record (a field is
//! missing, a field has the wrong type, the result is not a `bool`) is a [`RuleError`] naming the
//! rule and the reason, for the record's dead letter; nothing here panics on a record.
//!
//! # The crate
//!
//! The interpreter is the [`cel`] crate, pinned at `=0.15.0` (MSRV 1.86). It is the crate the
//! issue names as `cel-interpreter`, renamed upstream (same project, `cel-rust/cel-rust`);
//! `cel-interpreter` stopped at 0.10 and gets no fixes. It is built with
//! `default-features = false`: no `regex` (`matches()`), no `chrono` (`timestamp`, `duration`),
//! no base64 encoders. Threshold rules over sensor readings need comparisons, arithmetic,
//! `&&`/`||`/`!`, `in`, `has()`, `size()` and the string methods, all of which the lean build
//! has; a rule calling a function the build lacks is refused at compile time
//! ([`RulesError::UnknownFunction`]) rather than failing on every record.
//!
//! # Record fields as CEL values
//!
//! A rule's free identifiers are the record's top-level fields (`temperature`); nested fields are
//! selected with dots (`reading.temperature`). A record is anything implementing [`Fields`]:
//! a JSON object ([`serde_json::Map`] or [`serde_json::Value`]), a CSV row ([`CsvRow`]) or a map
//! of names to strings. A field is converted to a CEL value only when a rule looks it up, so the
//! fields no rule names cost nothing. The mapping:
//!
//! - every JSON number is a CEL `double` (integers beyond 2^53 lose precision). CEL compares
//!   numbers across types, so `temperature > 40` and `temperature > 40.0` mean the same whether
//!   the producer wrote `41` or `41.0`; arithmetic does not mix types, so write double
//!   literals there (`temperature * 1.8 + 32.0`);
//! - strings, booleans and `null` are CEL `string`, `bool` and `null`; arrays are lists and
//!   objects are maps, converted the same way element by element;
//! - a CSV cell, which carries no type, is a `double` when the whole cell parses as a finite
//!   number (`"41.5"`, `" 7 "`, `"1e3"`), otherwise a `string` (`"85123A"`, `""`, `"NaN"`).
//!   So a numeric-looking code column compares as a number: `StockCode == 22423.0`, or
//!   `string(StockCode) == "22423"`.
//!
//! # Numbers for the anomaly record
//!
//! [`Verdict::score`] is the number of rules that fired (`0.0` when none did);
//! [`Verdict::decision`] is `-1.0` when a rule fired and `+1.0` otherwise, so that negative means
//! anomalous as for every model kind.
//!
//! Evaluation is a pure function of the rule set and one record: a rule's Prometheus-like
//! `for` (it must hold on N consecutive records of a key) is kept beside the rule set, in the
//! partition worker's [`super::streaks::Streaks`], which the verdicts are fed to.
//!
//! [Common Expression Language]: https://github.com/google/cel-spec

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::types::{CelBool, CelDouble, CelList, CelMap, CelMapKey, CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value};
use thiserror::Error;

/// The longest expression accepted, in characters. Threshold rules are a line or two; the
/// bound keeps the parser's stack use bounded (see [`RuleSet::compile`]).
pub const MAX_EXPRESSION_CHARS: usize = 4096;

/// The deepest expression tree accepted. The interpreter recurses once per level on the
/// thread that evaluates records, up to ~40 KiB a level in a debug build (a chain of `+` or
/// nested lists); at this depth every shape tried fits in 1 MiB, half of a tokio worker's
/// default stack (`depth_limit_is_safe_on_a_small_stack`). For scale, `a > 1.0 || b > 2.0`
/// is 3 levels deep; the parser balances chains of `||` and `&&`, so 300 clauses are 11
/// levels, while each term of a chain of `+` adds a level.
pub const MAX_EXPRESSION_DEPTH: usize = 24;

/// The parser's stack: it recurses per character of some inputs (`((((...`), beyond the
/// 2 MiB a thread gets by default, before its own nesting limit refuses them.
const COMPILER_STACK_BYTES: usize = 64 << 20;

/// Why a set of rules cannot be compiled: a configuration error (exit 78 at the config layer).
///
/// Every variant names the rule. Positions are 1-based, in characters, within the rule's own
/// expression: the config layer adds the file and the line of the rule's key (plus `line - 1`
/// for an expression written over several lines).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RulesError {
    /// No rules were given: a rules scorer would never flag anything.
    #[error("no rules: a rules scorer needs at least one rule")]
    Empty,
    /// A rule's name is empty or only whitespace.
    #[error("a rule has an empty name")]
    EmptyName,
    /// Two rules share a name, so an anomaly could not say which one fired.
    #[error("rule `{rule}` is defined twice")]
    DuplicateName {
        /// The repeated name.
        rule: String,
    },
    /// The expression is not valid CEL.
    #[error(
        "rule `{rule}`: syntax error at line {line}, column {column} of its expression: {message}"
    )]
    Syntax {
        /// The rule's name.
        rule: String,
        /// Line within the expression, from 1.
        line: u32,
        /// Column within that line, from 1, in characters.
        column: u32,
        /// The parser's message.
        message: String,
    },
    /// The expression is longer than [`MAX_EXPRESSION_CHARS`].
    #[error("rule `{rule}`: the expression has {chars} characters, more than the {max} allowed")]
    TooLong {
        /// The rule's name.
        rule: String,
        /// The expression's length in characters.
        chars: usize,
        /// [`MAX_EXPRESSION_CHARS`].
        max: usize,
    },
    /// The expression nests deeper than [`MAX_EXPRESSION_DEPTH`] (e.g. a chain of hundreds of
    /// `+`): the interpreter recurses once per level and would run out of stack.
    #[error("rule `{rule}`: the expression nests {depth} levels deep, more than the {max} allowed")]
    TooDeep {
        /// The rule's name.
        rule: String,
        /// The depth of the expression's tree.
        depth: usize,
        /// [`MAX_EXPRESSION_DEPTH`].
        max: usize,
    },
    /// The expression calls a function this build of CEL does not have (e.g. `matches` or
    /// `timestamp`, left out with the `regex` and `chrono` features).
    #[error("rule `{rule}`: unknown function `{function}`")]
    UnknownFunction {
        /// The rule's name.
        rule: String,
        /// The function's name as written.
        function: String,
    },
}

/// A rule that could not be evaluated on one record: the record goes to the dead letters with
/// [`RuleError::CODE`] as its reason code and this error's text as the message.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("rule `{rule}`: {reason}")]
pub struct RuleError {
    /// The rule's name.
    pub rule: Arc<str>,
    /// What went wrong. Its text names fields and types, never a field's value, so it may be
    /// logged.
    pub reason: Reason,
}

impl RuleError {
    /// The dead-letter reason code of every rule error; [`Reason::code`] is the finer one.
    pub const CODE: &'static str = "rule_error";
}

/// Why a rule could not be evaluated on a record.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Reason {
    /// The record has no such field (top-level, or a key in a nested object).
    #[error("missing field `{field}`")]
    MissingField {
        /// The field or key that was looked up.
        field: String,
    },
    /// An operator or function got values of types it does not take, e.g. a string compared
    /// with a number.
    #[error("wrong type: {detail}")]
    WrongType {
        /// The operator or function and the types it got.
        detail: String,
    },
    /// The expression's result is not a `bool`.
    #[error("result is a {got}, not a bool")]
    NotBool {
        /// The CEL type of the result.
        got: &'static str,
    },
    /// Anything else the interpreter refused: division by zero, overflow, a failed conversion.
    #[error("{detail}")]
    Failed {
        /// The interpreter's description.
        detail: String,
    },
}

impl Reason {
    /// A stable, machine-readable code: `missing_field`, `wrong_type`, `not_bool` or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::MissingField { .. } => "missing_field",
            Reason::WrongType { .. } => "wrong_type",
            Reason::NotBool { .. } => "not_bool",
            Reason::Failed { .. } => "failed",
        }
    }
}

/// One field of a record, as a [`Fields`] implementation hands it to the rules. Borrowed: the
/// conversion to a CEL value copies no strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number, always a CEL `double`.
    Number(f64),
    /// A string known to be one (a JSON string).
    String(&'a str),
    /// Untyped text (a CSV cell): a `double` when it parses as a finite number, else a string.
    Text(&'a str),
    /// Any JSON value, arrays and objects included, converted recursively.
    Json(&'a serde_json::Value),
}

/// A record as the rules see it: its top-level fields by name.
///
/// `Sync` because the interpreter's variable lookup requires it; every record type here is.
pub trait Fields: Sync {
    /// The field called `name`, or `None` when the record has none.
    fn field(&self, name: &str) -> Option<FieldValue<'_>>;
}

impl Fields for serde_json::Map<String, serde_json::Value> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.get(name).map(FieldValue::Json)
    }
}

/// A JSON value: the fields of an object; any other value (an array, a number) has none, so
/// every rule on it fails with [`Reason::MissingField`].
impl Fields for serde_json::Value {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.as_object().and_then(|object| object.field(name))
    }
}

/// Names to untyped text, e.g. a CSV row already split into a map: every value is
/// [`FieldValue::Text`].
impl<S: std::hash::BuildHasher + Sync> Fields for HashMap<String, String, S> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.get(name).map(|text| FieldValue::Text(text))
    }
}

/// Names to untyped text, ordered: every value is [`FieldValue::Text`].
impl Fields for BTreeMap<String, String> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.get(name).map(|text| FieldValue::Text(text))
    }
}

/// A CSV line parsed by the `csv` crate, with the detector's column names: the cell under
/// column `name` as [`FieldValue::Text`]. A row shorter than the columns lacks the last fields.
#[derive(Debug, Clone, Copy)]
pub struct CsvRow<'a> {
    /// The configured column names, in order.
    pub columns: &'a [String],
    /// The line's cells.
    pub record: &'a csv::StringRecord,
}

impl Fields for CsvRow<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let index = self.columns.iter().position(|column| column == name)?;
        self.record.get(index).map(FieldValue::Text)
    }
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    program: Program,
    /// The top-level identifiers the expression reads (record fields, plus the iteration
    /// variables of macros such as `all`), sorted.
    fields: Vec<String>,
}

/// Rules compiled once, evaluated on many records; `Send + Sync`, so the partition workers can
/// share one behind an `Arc`.
pub struct RuleSet {
    env: Arc<Env>,
    rules: Vec<Rule>,
}

/// The rules' names and the fields they read (the environment has no `Debug`).
impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// The outcome of a rule set on one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// The names of the rules that were true, in the rule set's order. Empty when none was.
    pub fired: Vec<Arc<str>>,
}

impl Verdict {
    /// Whether any rule fired.
    pub fn anomalous(&self) -> bool {
        !self.fired.is_empty()
    }

    /// The rules scorer's native score: the number of rules that fired.
    pub fn score(&self) -> f64 {
        self.fired.len() as f64
    }

    /// The kind-independent decision: `-1.0` when a rule fired (anomalous), `+1.0` otherwise.
    pub fn decision(&self) -> f64 {
        if self.anomalous() { -1.0 } else { 1.0 }
    }
}

impl RuleSet {
    /// Compiles `rules`, given as `(name, expression)` pairs in the order anomalies will list
    /// them.
    ///
    /// # Errors
    ///
    /// [`RulesError`]: no rules, an empty or repeated name, a syntax error (with its position
    /// in the expression), an expression longer than [`MAX_EXPRESSION_CHARS`] or deeper than
    /// [`MAX_EXPRESSION_DEPTH`], or a call to a function this build of CEL lacks. The first
    /// problem in the given order is reported.
    ///
    /// Each rule is parsed on a short-lived thread with a 64 MiB stack, since the parser
    /// recurses per character on some inputs; the depth bound then keeps evaluation, which
    /// runs on the caller's thread, within a small stack.
    pub fn compile(rules: &[(String, String)]) -> Result<RuleSet, RulesError> {
        if rules.is_empty() {
            return Err(RulesError::Empty);
        }
        let env = Arc::new(Env::stdlib());
        let mut seen = BTreeSet::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (name, expression) in rules {
            if name.trim().is_empty() {
                return Err(RulesError::EmptyName);
            }
            if !seen.insert(name.as_str()) {
                return Err(RulesError::DuplicateName { rule: name.clone() });
            }
            let program = compile_one(&env, name, expression)?;
            let references = program.references();
            let mut fields: Vec<String> = references
                .variables()
                .into_iter()
                .map(str::to_owned)
                .collect();
            fields.sort_unstable();
            compiled.push(Rule {
                name: Arc::from(name.as_str()),
                program,
                fields,
            });
        }
        Ok(RuleSet {
            env,
            rules: compiled,
        })
    }

    /// The rules' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| &*rule.name)
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Always `false`: [`compile`](Self::compile) refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The top-level identifiers the rules read, sorted and deduplicated: the record fields
    /// they need (e.g. to check them against a CSV detector's columns at config load). It may
    /// hold more: the iteration variables of macros such as `list.all(x, x > 0.0)`, and type
    /// names used as values (`type(t) == double`).
    pub fn fields(&self) -> BTreeSet<&str> {
        self.rules
            .iter()
            .flat_map(|rule| rule.fields.iter().map(String::as_str))
            .collect()
    }

    /// Runs every rule on `record`, in order.
    ///
    /// # Errors
    ///
    /// The first rule that cannot be evaluated, as a [`RuleError`]; the rules after it are not
    /// run, since the record goes to the dead letters whatever they say. CEL's `||` and `&&`
    /// absorb an error when the other side decides the result: `missing > 1.0 || true` is true.
    pub fn evaluate<F: Fields + ?Sized>(&self, record: &F) -> Result<Verdict, RuleError> {
        let resolver = Resolver { record };
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.set_variable_resolver(&resolver);
        let mut verdict = Verdict::default();
        for rule in &self.rules {
            let error = |reason| RuleError {
                rule: Arc::clone(&rule.name),
                reason,
            };
            match rule.program.execute(&context) {
                Ok(Value::Bool(true)) => verdict.fired.push(Arc::clone(&rule.name)),
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    return Err(error(Reason::NotBool {
                        got: type_name(&other),
                    }));
                }
                Err(failure) => return Err(error(reason(failure, &rule.fields))),
            }
        }
        Ok(verdict)
    }
}

/// Compiles one rule on a thread with a deep stack, and checks its length, functions and depth.
///
/// The program is dropped on that thread too when refused: dropping a deep tree recurses.
fn compile_one(env: &Arc<Env>, name: &str, expression: &str) -> Result<Program, RulesError> {
    let chars = expression.chars().count();
    if chars > MAX_EXPRESSION_CHARS {
        return Err(RulesError::TooLong {
            rule: name.to_owned(),
            chars,
            max: MAX_EXPRESSION_CHARS,
        });
    }
    let work = || {
        let program = env
            .compile(expression)
            .map_err(|errors| syntax_error(name, &errors))?;
        let references = program.references();
        let mut functions = references.functions();
        functions.sort_unstable();
        if let Some(function) = functions
            .into_iter()
            .find(|function| !is_operator(function) && !env_knows(env, function))
        {
            return Err(RulesError::UnknownFunction {
                rule: name.to_owned(),
                function: function.to_owned(),
            });
        }
        let depth = depth(program.expression());
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(RulesError::TooDeep {
                rule: name.to_owned(),
                depth,
                max: MAX_EXPRESSION_DEPTH,
            });
        }
        Ok(program)
    };
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("rules-compiler".to_owned())
            .stack_size(COMPILER_STACK_BYTES)
            .spawn_scoped(scope, work)
        {
            // A panic inside the parser is a bug upstream; the config still gets an error
            // naming the rule rather than a crash.
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(RulesError::Syntax {
                    rule: name.to_owned(),
                    line: 1,
                    column: 1,
                    message: "the CEL parser failed on this expression".to_owned(),
                })
            }),
            // No thread to be had (resource limits): the length bound still applies.
            Err(_) => work(),
        }
    })
}

/// The first of the parser's errors, with its position. The parser reports every error it
/// recovered from; the first is the cause.
fn syntax_error(rule: &str, errors: &cel::ParseErrors) -> RulesError {
    let first = errors.errors.first();
    let (line, column) = first.map_or((1, 1), |e| e.pos);
    let message = match first {
        // Its nesting limit is reported as a wrapped error whose text is a debug dump.
        Some(error) if error.msg.contains("OtherError") => {
            "the expression nests too deeply".to_owned()
        }
        Some(error) => error.msg.clone(),
        None => errors.to_string(),
    };
    RulesError::Syntax {
        rule: rule.to_owned(),
        line: u32::try_from(line.max(1)).unwrap_or(u32::MAX),
        column: u32::try_from(column.max(1)).unwrap_or(u32::MAX),
        message,
    }
}

/// The depth of an expression tree (a lone identifier is 1), walked with an explicit stack
/// since the tree may be deeper than the call stack allows.
fn depth<'a>(root: &'a cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = 0;
    let mut pending = vec![(root, 1)];
    while let Some((node, level)) = pending.pop() {
        deepest = deepest.max(level);
        let mut push = |child: &'a cel::IdedExpr| pending.push((child, level + 1));
        match &node.expr {
            Expr::Call(call) => {
                call.target.iter().for_each(|target| push(target));
                call.args.iter().for_each(&mut push);
            }
            Expr::Comprehension(comprehension) => {
                for child in [
                    &comprehension.iter_range,
                    &comprehension.accu_init,
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ] {
                    push(child);
                }
            }
            Expr::List(list) => list.elements.iter().for_each(&mut push),
            Expr::Map(map) => map.entries.iter().for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(entry) => {
                    push(&entry.key);
                    push(&entry.value);
                }
                EntryExpr::StructField(field) => push(&field.value),
            }),
            Expr::Struct(structure) => {
                structure
                    .entries
                    .iter()
                    .for_each(|entry| match &entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            push(&entry.key);
                            push(&entry.value);
                        }
                        EntryExpr::StructField(field) => push(&field.value),
                    })
            }
            Expr::Select(select) => push(&select.operand),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    deepest
}

/// Operators and internal helpers appear among a program's functions under names that are
/// not identifiers (`_>_`, `@in`, `!_`); real functions are identifiers.
fn is_operator(function: &str) -> bool {
    function.starts_with('@')
        || !function
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `function` is declared in `env`. `cel` keeps its own lookup private; adding a
/// function of that name to a scratch context is refused exactly when the environment already
/// declares it, as a global or a member function.
fn env_knows(env: &Arc<Env>, function: &str) -> bool {
    Context::with_env(Arc::clone(env))
        .add_function(function, |x: f64| x)
        .is_err()
}

/// Looks a rule's free identifiers up in the record, converting on demand.
struct Resolver<'r, F: ?Sized> {
    record: &'r F,
}

impl<F: Fields + ?Sized> VariableResolver for Resolver<'_, F> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.field(variable)
            .map(|value| CowVal::Owned(to_val(value)))
    }
}

impl<F: Fields + ?Sized> Resolver<'_, F> {
    /// The field `name`, or for a dotted name the nested JSON value it selects.
    ///
    /// For `location.lat` the interpreter asks for `location.lat` first and then for
    /// `location` (CEL's rule for qualified names, so a field literally named `location.lat`
    /// wins). Answering the dotted name by walking the JSON saves converting the whole
    /// `location` object into a CEL map for one number; when a segment is missing the answer
    /// is `None`, and the interpreter's select on `location` reports the missing key.
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        if let Some(value) = self.record.field(name) {
            return Some(value);
        }
        let (root, path) = name.split_once('.')?;
        let FieldValue::Json(mut value) = self.record.field(root)? else {
            return None;
        };
        for segment in path.split('.') {
            value = value.as_object()?.get(segment)?;
        }
        Some(FieldValue::Json(value))
    }
}

/// A field as a CEL value, borrowing its strings from the record.
fn to_val(value: FieldValue<'_>) -> Box<dyn Val + '_> {
    match value {
        FieldValue::Null => Box::new(CelNull),
        FieldValue::Bool(b) => Box::new(CelBool::from(b)),
        FieldValue::Number(n) => Box::new(CelDouble::from(n)),
        FieldValue::String(s) => Box::new(CelString::from(s)),
        FieldValue::Text(text) => match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Box::new(CelDouble::from(n)),
            _ => Box::new(CelString::from(text)),
        },
        FieldValue::Json(json) => json_to_val(json),
    }
}

/// A JSON value as a CEL value: numbers as doubles, arrays as lists, objects as maps.
///
/// Recursive; `serde_json` refuses documents nested deeper than 128 levels, which bounds the
/// depth for parsed records.
fn json_to_val(json: &serde_json::Value) -> Box<dyn Val + '_> {
    use serde_json::Value as Json;
    match json {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        // Without serde_json's arbitrary_precision every number has an f64 form.
        Json::Number(n) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        Json::Object(object) => Box::new(CelMap::from(
            object
                .iter()
                .map(|(key, value)| (CelMapKey::from(key.as_str()), json_to_val(value)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// The interpreter's error as a [`Reason`], naming types rather than values.
fn reason(error: ExecutionError, fields: &[String]) -> Reason {
    match error {
        ExecutionError::UndeclaredReference(name) if fields.iter().any(|f| **f == *name) => {
            Reason::MissingField {
                field: name.to_string(),
            }
        }
        ExecutionError::NoSuchKey(key) => Reason::MissingField {
            field: key.to_string(),
        },
        ExecutionError::NoSuchOverload(overload) => Reason::WrongType {
            detail: format!(
                "`{}` does not take ({})",
                operator(overload.function()),
                overload.argument_types().join(", ")
            ),
        },
        ExecutionError::ValuesNotComparable(left, right) => Reason::WrongType {
            detail: format!(
                "cannot compare {} with {}",
                type_name(&left),
                type_name(&right)
            ),
        },
        ExecutionError::UnsupportedBinaryOperator(op, left, right) => Reason::WrongType {
            detail: format!(
                "`{op}` does not take ({}, {})",
                type_name(&left),
                type_name(&right)
            ),
        },
        ExecutionError::UnexpectedType { got, want } => Reason::WrongType {
            detail: format!("got {got}, want {want}"),
        },
        ExecutionError::UnsupportedTargetType { target } => Reason::WrongType {
            detail: format!("unsupported target of type {}", type_name(&target)),
        },
        ExecutionError::UnsupportedIndex(index, target) => Reason::WrongType {
            detail: format!(
                "cannot index {} with {}",
                type_name(&target),
                type_name(&index)
            ),
        },
        ExecutionError::UnsupportedKeyType(key) => Reason::WrongType {
            detail: format!("a {} cannot be a map key", type_name(&key)),
        },
        ExecutionError::DivisionByZero(_) => Reason::Failed {
            detail: "division by zero".to_owned(),
        },
        ExecutionError::RemainderByZero(_) => Reason::Failed {
            detail: "remainder by zero".to_owned(),
        },
        ExecutionError::Overflow(op, left, right) => Reason::Failed {
            detail: format!(
                "overflow in `{op}` on ({}, {})",
                type_name(&left),
                type_name(&right)
            ),
        },
        ExecutionError::IndexOutOfBounds(_) => Reason::Failed {
            detail: "index out of bounds".to_owned(),
        },
        ExecutionError::DuplicateKey(_) => Reason::Failed {
            detail: "repeated key in a map literal".to_owned(),
        },
        // The rest carry no record values: argument counts, function messages, names.
        other => Reason::Failed {
            detail: other.to_string(),
        },
    }
}

/// `_>_` as written in a rule: `>`. Functions keep their names.
fn operator(function: &str) -> &str {
    function
        .strip_prefix('_')
        .and_then(|f| f.strip_suffix('_'))
        .filter(|f| !f.contains('_'))
        .unwrap_or(function)
}

/// A value's CEL type name (`double`, not the crate's `float`).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Opaque(_) => "opaque",
        Value::Struct(_) => "struct",
        Value::Null => "null_type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, expression)| (name.to_string(), expression.to_string()))
            .collect()
    }

    fn compile(pairs: &[(&str, &str)]) -> RuleSet {
        RuleSet::compile(&rules(pairs)).expect("rules compile")
    }

    /// Whether the single rule `expression` fires on `record`.
    fn fires(expression: &str, record: serde_json::Value) -> bool {
        compile(&[("r", expression)])
            .evaluate(&record)
            .expect("rule evaluates")
            .anomalous()
    }

    #[test]
    fn each_comparison_operator() {
        let record = json!({"t": 40.0});
        for (expression, expected) in [
            ("t < 41.0", true),
            ("t < 40.0", false),
            ("t <= 40.0", true),
            ("t <= 39.9", false),
            ("t > 39.9", true),
            ("t > 40.0", false),
            ("t >= 40.0", true),
            ("t >= 40.1", false),
            ("t == 40.0", true),
            ("t == 40.5", false),
            ("t != 40.5", true),
            ("t != 40.0", false),
        ] {
            assert_eq!(fires(expression, record.clone()), expected, "{expression}");
        }
    }

    #[test]
    fn strict_and_inclusive_bounds() {
        assert!(!fires("temperature > 40.0", json!({"temperature": 40.0})));
        assert!(fires("temperature >= 40.0", json!({"temperature": 40.0})));
        assert!(!fires("temperature < 40.0", json!({"temperature": 40.0})));
        assert!(fires("temperature <= 40.0", json!({"temperature": 40.0})));
        assert!(fires(
            "temperature > 40.0",
            json!({"temperature": 40.000001})
        ));
    }

    #[test]
    fn integers_and_doubles_compare_alike() {
        // The producer may write 41 or 41.0; the rule may write 40 or 40.0.
        for record in [json!({"t": 41}), json!({"t": 41.0})] {
            for expression in ["t > 40", "t > 40.0", "t == 41", "t == 41.0", "t >= 41"] {
                assert!(
                    fires(expression, record.clone()),
                    "{expression} on {record}"
                );
            }
            assert!(!fires("t > 41", record.clone()));
        }
        // Arithmetic on a field is double arithmetic.
        assert!(fires("t * 1.8 + 32.0 > 105.0", json!({"t": 41})));
        let set = compile(&[("mixed", "t + 1 > 2.0")]);
        let error = set.evaluate(&json!({"t": 41})).unwrap_err();
        assert_eq!(error.reason.code(), "wrong_type", "{error}");
    }

    #[test]
    fn logical_operators() {
        let set = compile(&[("either", "temperature > 40.0 || pressure > 120.0")]);
        let both = compile(&[("both", "temperature > 40.0 && pressure > 120.0")]);
        for (t, p, either, and) in [
            (41.0, 100.0, true, false),
            (30.0, 130.0, true, false),
            (41.0, 130.0, true, true),
            (30.0, 100.0, false, false),
        ] {
            let record = json!({"temperature": t, "pressure": p});
            assert_eq!(set.evaluate(&record).unwrap().anomalous(), either);
            assert_eq!(both.evaluate(&record).unwrap().anomalous(), and);
        }
        assert!(fires("!(t > 1.0)", json!({"t": 0.5})));
    }

    #[test]
    fn nested_fields() {
        let record = json!({"reading": {"temperature": 41.5, "unit": "C"}, "tags": ["a", "b"]});
        assert!(fires("reading.temperature > 40.0", record.clone()));
        assert!(fires("reading.unit == 'C' && 'b' in tags", record.clone()));
        assert!(fires(
            "has(reading.unit) && !has(reading.humidity)",
            record.clone()
        ));
        // A key with a dot in it is found whole, as CEL resolves qualified names.
        assert!(fires("a.b > 1.0", json!({"a.b": 2.0, "a": {"b": 0.0}})));
        assert!(fires("a.b.c == 'deep'", json!({"a": {"b": {"c": "deep"}}})));
        let error = compile(&[("not_an_object", "reading.unit.x == 1.0")])
            .evaluate(&record)
            .unwrap_err();
        assert_eq!(error.reason.code(), "wrong_type", "{error}");
        let error = compile(&[("humid", "reading.humidity > 80.0")])
            .evaluate(&record)
            .unwrap_err();
        assert_eq!(&*error.rule, "humid");
        assert_eq!(
            error.reason,
            Reason::MissingField {
                field: "humidity".into()
            }
        );
    }

    #[test]
    fn missing_field_names_the_rule() {
        let set = compile(&[
            ("hot", "temperature > 40.0"),
            ("over_pressure", "pressure > 120.0"),
        ]);
        let error = set.evaluate(&json!({"temperature": 20.0})).unwrap_err();
        assert_eq!(&*error.rule, "over_pressure");
        assert_eq!(
            error.reason,
            Reason::MissingField {
                field: "pressure".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "rule `over_pressure`: missing field `pressure`"
        );
        assert_eq!(RuleError::CODE, "rule_error");
    }

    #[test]
    fn wrong_type_names_the_rule_and_not_the_value() {
        let set = compile(&[("hot", "temperature > 40.0")]);
        let error = set
            .evaluate(&json!({"temperature": "secret-ish text"}))
            .unwrap_err();
        assert_eq!(&*error.rule, "hot");
        assert_eq!(error.reason.code(), "wrong_type");
        let text = error.to_string();
        assert!(text.contains("string") && text.contains("double"), "{text}");
        assert!(!text.contains("secret-ish"), "{text}");
        for value in [json!(null), json!(true), json!([1.0]), json!({"a": 1.0})] {
            let error = set.evaluate(&json!({ "temperature": value })).unwrap_err();
            assert_eq!(error.reason.code(), "wrong_type", "{value}: {error}");
        }
    }

    #[test]
    fn non_bool_result_is_an_error() {
        for (expression, got) in [("t + 1.0", "double"), ("'x'", "string"), ("[t]", "list")] {
            let error = compile(&[("sum", expression)])
                .evaluate(&json!({"t": 1.0}))
                .unwrap_err();
            assert_eq!(&*error.rule, "sum");
            assert_eq!(error.reason, Reason::NotBool { got }, "{expression}");
        }
    }

    #[test]
    fn evaluation_failures_are_errors() {
        let error = compile(&[("div", "1 / zero > 0")])
            .evaluate(&json!({"zero": 0}))
            .unwrap_err();
        // `zero` is a double, so `1 / zero` mixes int and double.
        assert_eq!(error.reason.code(), "wrong_type", "{error}");
        let error = compile(&[("div", "1 / 0 > 0")])
            .evaluate(&json!({}))
            .unwrap_err();
        assert_eq!(error.reason.code(), "failed");
        assert_eq!(error.to_string(), "rule `div`: division by zero");
    }

    #[test]
    fn an_error_absorbed_by_or_is_not_an_error() {
        assert!(fires("missing > 1.0 || t > 0.0", json!({"t": 1.0})));
        assert!(!fires("missing > 1.0 && t > 5.0", json!({"t": 1.0})));
    }

    #[test]
    fn syntax_error_names_the_rule_and_position() {
        let error = RuleSet::compile(&rules(&[
            ("hot", "temperature > 40.0"),
            ("broken", "pressure >\n  > 120.0"),
        ]))
        .unwrap_err();
        match &error {
            RulesError::Syntax {
                rule,
                line,
                column,
                message,
            } => {
                assert_eq!(rule, "broken");
                assert_eq!((*line, *column), (2, 3));
                assert!(!message.is_empty());
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .starts_with("rule `broken`: syntax error at line 2")
        );
        let error = RuleSet::compile(&rules(&[("eof", "t >")])).unwrap_err();
        assert!(
            matches!(
                error,
                RulesError::Syntax {
                    line: 1,
                    column: 4,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_functions_and_bad_names_are_refused() {
        assert_eq!(
            RuleSet::compile(&rules(&[("re", "name.matches('^a')")])).unwrap_err(),
            RulesError::UnknownFunction {
                rule: "re".into(),
                function: "matches".into()
            }
        );
        assert!(matches!(
            RuleSet::compile(&rules(&[("abs", "abs(t) > 1.0")])),
            Err(RulesError::UnknownFunction { .. })
        ));
        assert_eq!(RuleSet::compile(&[]).unwrap_err(), RulesError::Empty);
        assert_eq!(
            RuleSet::compile(&rules(&[(" ", "true")])).unwrap_err(),
            RulesError::EmptyName
        );
        assert_eq!(
            RuleSet::compile(&rules(&[("a", "true"), ("a", "false")])).unwrap_err(),
            RulesError::DuplicateName { rule: "a".into() }
        );
        // The standard functions this build has are accepted.
        compile(&[(
            "std",
            "size(s) > 1 && s.startsWith('a') && s.contains('b') && int(t) == 4 \
             && string(t) == '4.5' && double('1.5') < t && type(t) == double",
        )]);
    }

    #[test]
    fn rules_fire_in_config_order() {
        let set = compile(&[
            ("z_last_name_first", "t > 1.0"),
            ("never", "t > 100.0"),
            ("a_first_name_last", "t > 2.0"),
        ]);
        let verdict = set.evaluate(&json!({"t": 50.0})).unwrap();
        let names: Vec<&str> = verdict.fired.iter().map(|n| &**n).collect();
        assert_eq!(names, ["z_last_name_first", "a_first_name_last"]);
        assert_eq!(verdict.score(), 2.0);
        assert_eq!(verdict.decision(), -1.0);
        let quiet = set.evaluate(&json!({"t": 0.0})).unwrap();
        assert!(!quiet.anomalous());
        assert_eq!((quiet.score(), quiet.decision()), (0.0, 1.0));
        assert_eq!(
            set.names().collect::<Vec<_>>(),
            ["z_last_name_first", "never", "a_first_name_last"]
        );
    }

    #[test]
    fn fields_lists_the_identifiers_read() {
        let set = compile(&[
            ("hot", "temperature > 40.0"),
            ("mix", "reading.t > 1.0 || pressure > temperature"),
        ]);
        assert_eq!(
            set.fields().into_iter().collect::<Vec<_>>(),
            ["pressure", "reading", "temperature"]
        );
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn csv_cells_are_numbers_when_they_parse() {
        let columns: Vec<String> = ["InvoiceNo", "StockCode", "Quantity", "Note"]
            .map(String::from)
            .to_vec();
        let record = csv::StringRecord::from(vec!["536365", "85123A", " 6 ", ""]);
        let row = CsvRow {
            columns: &columns,
            record: &record,
        };
        let set = compile(&[
            ("many", "Quantity >= 6"),
            ("code", "StockCode == '85123A'"),
            (
                "invoice",
                "InvoiceNo == 536365.0 && string(InvoiceNo) == '536365'",
            ),
            ("empty", "Note == ''"),
        ]);
        assert_eq!(set.evaluate(&row).unwrap().fired.len(), 4);
        let error = compile(&[("q", "StockCode > 1.0")])
            .evaluate(&row)
            .unwrap_err();
        assert_eq!(error.reason.code(), "wrong_type");
        let error = compile(&[("p", "Price > 1.0")]).evaluate(&row).unwrap_err();
        assert_eq!(
            error.reason,
            Reason::MissingField {
                field: "Price".into()
            }
        );
        // NaN and infinity are not numbers a threshold can use: they stay text.
        let map = HashMap::from([("x".to_string(), "NaN".to_string())]);
        assert!(
            compile(&[("nan", "x == 'NaN'")])
                .evaluate(&map)
                .unwrap()
                .anomalous()
        );
        let map = BTreeMap::from([("x".to_string(), "inf".to_string())]);
        assert!(
            compile(&[("inf", "x == 'inf'")])
                .evaluate(&map)
                .unwrap()
                .anomalous()
        );
    }

    #[test]
    fn a_record_that_is_not_an_object_has_no_fields() {
        let set = compile(&[("hot", "temperature > 40.0")]);
        for record in [json!([1.0, 2.0]), json!(41.0), json!(null), json!("t")] {
            let error = set.evaluate(&record).unwrap_err();
            assert_eq!(error.reason.code(), "missing_field", "{record}");
        }
    }

    #[test]
    fn rule_set_is_shareable_across_workers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RuleSet>();
        shareable::<Verdict>();
        shareable::<RuleError>();
    }

    #[test]
    fn the_documented_examples_hold() {
        // docs/rules.md: balanced `||` chains, a `+` chain over the depth limit.
        let env = Env::stdlib();
        let chain = vec!["t > 1.0"; 300].join(" || ");
        assert_eq!(depth(env.compile(&chain).unwrap().expression()), 11);
        let plus = format!("{} > 1.0", vec!["t"; 30].join(" + "));
        assert!(matches!(
            RuleSet::compile(&rules(&[("sum", &plus)])),
            Err(RulesError::TooDeep { .. })
        ));
        let record = json!({
            "temperature": 41.0, "high": 10.0, "low": 2.0, "tags": ["fault"],
            "sensor": "boiler-7", "site": "plant-north", "count": 24, "ok": false,
            "reading": {"humidity": 95.0},
        });
        for expression in [
            "temperature * 1.8 + 32.0 > 104.0",
            "high - low > 5.0",
            "!(ok)",
            "ok ? high > 1.0 : low > 1.0",
            "has(reading.humidity) && reading.humidity > 90.0",
            "'fault' in tags && size(tags) < 3",
            "sensor.startsWith('boiler-') && site.contains('north')",
            "int(count) % 12 == 0",
        ] {
            assert!(fires(expression, record.clone()), "{expression}");
        }
        let messages = [
            (
                "over_pressure",
                "pressure > 120.0",
                "missing field `pressure`",
            ),
            (
                "hot",
                "sensor > 40.0",
                "wrong type: `>` does not take (string, double)",
            ),
            ("sum", "high + 1.0", "result is a double, not a bool"),
        ];
        for (name, expression, message) in messages {
            let error = compile(&[(name, expression)])
                .evaluate(&record)
                .unwrap_err();
            assert_eq!(error.to_string(), format!("rule `{name}`: {message}"));
        }
        // false || error is the error.
        let error = compile(&[("either", "pressure > 120.0 || temperature > 50.0")])
            .evaluate(&record)
            .unwrap_err();
        assert_eq!(error.reason.code(), "missing_field");
    }

    /// Pathological expressions, by size: each is refused or accepted, never a stack overflow.
    pub(super) fn pathological(n: usize) -> Vec<(&'static str, String)> {
        vec![
            (
                "parens",
                format!("{}t{} > 1.0", "(".repeat(n), ")".repeat(n)),
            ),
            ("lists", format!("{}t{} == t", "[".repeat(n), "]".repeat(n))),
            ("nots", format!("{}(t > 1.0)", "!".repeat(n))),
            ("negations", format!("{}t > 1.0", "-".repeat(n))),
            ("or", vec!["t > 1.0"; n].join(" || ")),
            ("and", vec!["t > 1.0"; n].join(" && ")),
            ("plus", format!("{} > 1.0", vec!["t"; n].join(" + "))),
            ("ternary", format!("{}true", "t > 1.0 ? false : ".repeat(n))),
            ("select", format!("r{} > 1.0", ".a".repeat(n))),
            (
                "comprehension",
                format!("{}t > 0.0{}", "[1.0].all(x, ".repeat(n), ")".repeat(n)),
            ),
        ]
    }

    #[test]
    fn huge_and_deep_expressions_are_refused_not_overflowed() {
        for (name, expression) in pathological(5_000) {
            let result = RuleSet::compile(&rules(&[("deep", &expression)]));
            assert!(
                matches!(
                    result,
                    Err(RulesError::TooLong { .. }
                        | RulesError::TooDeep { .. }
                        | RulesError::Syntax { .. })
                ),
                "{name}: {result:?}"
            );
        }
        for (name, expression) in pathological(300) {
            match RuleSet::compile(&rules(&[("deep", &expression)])) {
                Err(
                    RulesError::TooDeep { .. }
                    | RulesError::Syntax { .. }
                    | RulesError::TooLong { .. },
                ) => {}
                // The parser folds an even number of `!` or `-`, and balances `||` and `&&`
                // chains: what is left is shallow.
                Ok(set) if ["nots", "negations", "or", "and"].contains(&name) => {
                    assert!(set.evaluate(&json!({"t": 2.0})).unwrap().anomalous())
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let error =
            RuleSet::compile(&rules(&[("long", &"t > 1.0 || ".repeat(1_000))])).unwrap_err();
        assert!(
            matches!(error, RulesError::TooLong { chars: 11_000, .. }),
            "{error}"
        );
    }

    #[test]
    fn depth_limit_is_safe_on_a_small_stack() {
        // The deepest accepted expression of each shape, evaluated on a 1 MiB thread (half
        // of a tokio worker's default stack) in whatever profile the tests run.
        let record = json!({"t": 2.0, "r": {"a": {"a": {"a": 1.0}}}});
        let mut accepted = 0;
        for (name, _) in pathological(1) {
            let deepest = (1..=MAX_EXPRESSION_DEPTH)
                .rev()
                .map(|n| {
                    let expression = pathological(n).into_iter().find(|(s, _)| *s == name);
                    RuleSet::compile(&rules(&[("deep", &expression.unwrap().1)]))
                })
                .find_map(Result::ok);
            let Some(set) = deepest else { continue };
            accepted += 1;
            let record = record.clone();
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    // A verdict or an error: either way no overflow.
                    let _outcome = set.evaluate(&record);
                    drop(set);
                })
                .unwrap()
                .join()
                .unwrap_or_else(|_| panic!("{name} panicked"));
        }
        assert!(
            accepted >= 8,
            "only {accepted} shapes accepted at some depth"
        );
    }

    /// A small seeded generator, so the property test is reproducible without a dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_json(rng: &mut Lcg, depth: u32) -> serde_json::Value {
        match rng.below(if depth == 0 { 6 } else { 8 }) {
            0 => json!(null),
            1 => json!(rng.below(2) == 1),
            2 => {
                let choices = [
                    json!(0),
                    json!(-1),
                    json!(40),
                    json!(40.0),
                    json!(40.000001),
                    json!(i64::MIN),
                    json!(u64::MAX),
                    json!(1e308),
                    json!(-1e308),
                    json!(5e-324),
                ];
                choices[rng.below(choices.len() as u64) as usize].clone()
            }
            3 => json!(rng.next() as f64 / 1e3 - 5e5),
            4 | 5 => {
                let strings = [
                    "",
                    "41.5",
                    "hot",
                    "°C ☃ 温度",
                    "\u{0}",
                    "NaN",
                    "1e999",
                    "'\"",
                ];
                json!(strings[rng.below(strings.len() as u64) as usize])
            }
            6 => serde_json::Value::Array(
                (0..rng.below(4))
                    .map(|_| random_json(rng, depth - 1))
                    .collect(),
            ),
            _ => random_record(rng, depth - 1),
        }
    }

    fn random_record(rng: &mut Lcg, depth: u32) -> serde_json::Value {
        let names = ["temperature", "pressure", "reading", "t", "tags", "ünïcödé"];
        let mut object = serde_json::Map::new();
        for name in names {
            if rng.below(3) != 0 {
                object.insert(name.to_owned(), random_json(rng, depth));
            }
        }
        serde_json::Value::Object(object)
    }

    #[test]
    fn random_expressions_compile_or_are_refused_never_a_panic() {
        let tokens = [
            "t",
            "pressure",
            "reading",
            ".",
            "temperature",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ":",
            ",",
            "?",
            ">",
            ">=",
            "<",
            "==",
            "!=",
            "!",
            "-",
            "+",
            "*",
            "/",
            "%",
            "&&",
            "||",
            "in",
            "1",
            "40.0",
            "1e308",
            "0x1F",
            "3u",
            "'a'",
            "\"温度\"",
            "'",
            "\"",
            "\\",
            "true",
            "null",
            "has",
            "size",
            "all",
            "x",
            "\n",
            " ",
            "é",
            "☃",
            "`",
            "#",
            "b'\\xff'",
        ];
        let mut rng = Lcg(7);
        let record = random_record(&mut Lcg(3), 2);
        let (mut compiled, mut refused) = (0, 0);
        for _ in 0..1_500 {
            let length = 1 + rng.below(24);
            let expression: String = (0..length)
                .map(|_| tokens[rng.below(tokens.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(if rng.below(2) == 0 { " " } else { "" });
            match RuleSet::compile(&rules(&[("fuzz", &expression)])) {
                Ok(set) => {
                    compiled += 1;
                    // A verdict or an error naming the rule.
                    if let Err(error) = set.evaluate(&record) {
                        assert_eq!(&*error.rule, "fuzz");
                    }
                }
                Err(error) => {
                    refused += 1;
                    assert!(error.to_string().contains("fuzz"), "{error}");
                }
            }
        }
        assert!(
            compiled > 0 && refused > 0,
            "{compiled} compiled, {refused} refused"
        );
    }

    #[test]
    fn random_records_give_a_verdict_or_an_error_never_a_panic() {
        let pairs = [
            ("hot", "temperature > 40.0"),
            ("over_pressure", "pressure >= 120"),
            ("nested", "reading.temperature != 3.5"),
            ("listed", "size(tags) > 2 && tags[0] == 'hot'"),
            ("arith", "t * 2.0 - pressure < 1e300"),
            ("has", "has(reading.t) || t == '°C ☃ 温度'"),
            ("strings", "string(t).size() >= 0"),
            (
                "conversions",
                "int(t) > 0 || uint(pressure) > 0u || double(reading) > 1.0",
            ),
            ("index", "tags[1] == reading['t'] || reading.t.a == 1.0"),
        ];
        let set = compile(&pairs);
        // Each rule alone as well, so that every rule reaches a verdict on some records.
        let singles: Vec<RuleSet> = pairs.iter().map(|pair| compile(&[*pair])).collect();
        let mut rng = Lcg(12);
        let (mut verdicts, mut errors) = (0, 0);
        for _ in 0..3_000 {
            let record = random_record(&mut rng, 3);
            for rules in std::iter::once(&set).chain(&singles) {
                match rules.evaluate(&record) {
                    Ok(verdict) => {
                        verdicts += 1;
                        assert!(verdict.fired.len() <= rules.len());
                        assert_eq!(verdict.decision() < 0.0, verdict.anomalous());
                    }
                    Err(error) => {
                        errors += 1;
                        assert!(rules.names().any(|n| n == &*error.rule), "{error}");
                    }
                }
            }
        }
        // Both outcomes occur, so the generator exercises both paths.
        assert!(
            verdicts > 0 && errors > 0,
            "{verdicts} verdicts, {errors} errors"
        );
    }
}
