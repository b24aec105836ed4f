//! Architecture walls: the layering of `src/` checked by reading the sources.
//!
//! In the style of rust-analyzer's "tidy" tests, nothing here compiles or
//! links against the crate: the test lexes every `.rs` file under `src/`
//! (comments, doc comments, string and char literals dropped) and fails when
//!
//! 1. a top-level module names another one through a `crate::` path and the
//!    other's rank in `MODULES` is not strictly lower than its own (rank 0
//!    modules are leaves and name nothing of the crate);
//! 2. an inner stage (`INNER`) names I/O, protobuf or the clock (`FORBIDDEN`,
//!    `FORBIDDEN_CALLS`);
//! 3. a file in `src/` belongs to a top-level module that is not in `MODULES`;
//! 4. the files form a cycle through `crate::` paths.
//!
//! `MODULES` mirrors the "Invariants" of ARCHITECTURE.md: change both
//! together. To add a top-level module, give it the lowest rank above every
//! module it imports (and below every module importing it), add a
//! `("name", rank)` line to `MODULES` and the same line to ARCHITECTURE.md; if
//! it is an inner stage (pure computation on plain values: no I/O, no
//! protobuf, no clock), add it to `INNER` as well.
//!
//! What counts as an import: every `crate::` path in code, wherever it is
//! (`use`, `pub use`, grouped `use crate::{a::X, b::{Y, Z}}` over any number
//! of lines, and inline paths in expressions, types and attributes such as
//! `crate::a::f()`), `$crate::` in macros, and `super::` paths that climb out
//! of a top-level module to the crate root (`super::x` in `src/foo.rs`, or in
//! `src/foo/mod.rs`, is `crate::x`). Other `super::` and `self::` paths stay
//! inside their top-level module and are not imports. `src/lib.rs` (which only
//! declares the modules) and `src/main.rs` (a separate crate that names the
//! library as `triage::`) are exempt.
//!
//! Test code obeys the import walls like any other code (a test that needs an
//! outer module belongs to that module), but is exempt from the inner-stage
//! ban on I/O and the clock: files named `tests.rs`, files under a `tests/`
//! folder, and items marked exactly `#[cfg(test)]` (inline test modules, test
//! helpers), so that tests may use temporary files and timers.
//!
//! The cycle check works on files: an edge goes from a file to the deepest file
//! that a `crate::a::b::…` path names (`src/a/b.rs`, `src/a/b/mod.rs`,
//! `src/a.rs`, …; the path may end in an item inside that file). `super::` and
//! `self::` paths add no edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Top-level modules and their ranks: a module imports only modules of a
/// strictly lower rank. Mirrors ARCHITECTURE.md ("Invariants").
const MODULES: &[(&str, u32)] = &[
    ("model", 0),
    ("telemetry", 0),
    ("validate", 0),
    ("store", 1),
    ("security", 1),
    ("receiver", 2),
    ("ingest", 3),
    ("detect", 3),
    ("forward", 3),
    ("analyze", 4),
    ("pipeline", 5),
    ("history", 6),
    ("replay", 6),
    ("agent", 6),
    ("alert", 7),
    ("query", 7),
    ("admin", 7),
    ("config", 8),
    ("server", 9),
    // The simulator, evaluation and demo: no product module may import them.
    ("tools", 10),
];

/// Files of `src/` outside the table: the library root and the binary.
const EXEMPT: &[&str] = &["lib.rs", "main.rs"];

/// Inner stages: computation on plain values, tested without sockets, files
/// or a real clock.
const INNER: &[&str] = &["model", "store", "detect", "analyze"];

/// Path prefixes an inner stage never names, with what they stand for.
const FORBIDDEN: &[(&[&str], &str)] = &[
    (&["prost"], "protobuf"),
    (&["tonic"], "gRPC"),
    (&["opentelemetry_proto"], "OTLP protobuf"),
    (&["reqwest"], "an HTTP client"),
    (&["rusqlite"], "SQLite"),
    (&["axum"], "an HTTP server"),
    (&["hyper"], "HTTP"),
    (&["tokio", "net"], "network I/O"),
    (&["tokio", "fs"], "file I/O"),
    (&["tokio", "io"], "I/O"),
    (&["tokio", "process"], "processes"),
    (&["tokio", "time"], "the clock"),
    (&["std", "fs"], "file I/O"),
    (&["std", "net"], "network I/O"),
    (&["std", "process"], "processes"),
];

/// Calls an inner stage never makes, whatever path leads to them
/// (`std::time::Instant::now`, `Instant::now`, …): time comes in as a value.
const FORBIDDEN_CALLS: &[(&[&str], &str)] = &[
    (&["SystemTime", "now"], "the clock"),
    (&["Instant", "now"], "the clock"),
];

/// Every problem in `files` (paths relative to `src/`, with their sources),
/// one line each, naming the file and line, the offending path and the rule.
fn check(files: &[(String, String)]) -> Vec<String> {
    let ranks: BTreeMap<&str, u32> = MODULES.iter().copied().collect();
    let names: BTreeSet<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    let mut problems = Vec::new();

    let mut unknown = BTreeSet::new();
    for (path, _) in files {
        if let Some(module) = top_module(path) {
            if !ranks.contains_key(module) && unknown.insert(module) {
                problems.push(format!(
                    "src/{path}: unknown top-level module `{module}`: add it with its rank to \
                     MODULES in tests/it/walls.rs and to the \"Invariants\" of ARCHITECTURE.md"
                ));
            }
        }
    }

    let mut graph = Graph::new();
    for (path, source) in files {
        let tokens = lex(source);
        let scopes = scopes(&tokens);
        let module = top_module(path);
        let inner = module.is_some_and(|m| INNER.contains(&m)) && !is_test_file(path);
        for found in paths(&tokens) {
            let names_of: Vec<&str> = found.segments.iter().map(|(s, _)| s.as_str()).collect();
            let shown = names_of.join("::");

            if let Some(from) = module {
                let depth = module_depth(path) + scopes.mod_depth[found.token];
                if let Some((target, line)) = crate_target(&found, depth) {
                    if let Some((what, rule)) = rank_rule(from, target, &ranks) {
                        problems.push(format!("src/{path}:{line}: {what} via `{shown}`: {rule}"));
                    }
                }
            }

            if inner && !scopes.test[found.token] {
                if let Some((line, what)) = forbidden(&found, &names_of) {
                    let from = module.unwrap_or_default();
                    problems.push(format!(
                        "src/{path}:{line}: {from} uses `{shown}` ({what}): an inner stage ({}) \
                         does no I/O, sees no protobuf and never reads the clock",
                        INNER.join(", ")
                    ));
                }
            }

            if names_of.first() == Some(&"crate") {
                if let Some(to) = resolve(&names_of[1..], &names) {
                    if to != path {
                        let line = found.segments.get(1).map_or(0, |(_, line)| *line);
                        graph.add(path, to, line, shown);
                    }
                }
            }
        }
    }
    problems.extend(graph.cycles());
    problems
}

/// The top-level module a file belongs to: `a` for `a.rs`, `a/mod.rs` and
/// `a/…`; `None` for the exempt files.
fn top_module(path: &str) -> Option<&str> {
    if EXEMPT.contains(&path) {
        return None;
    }
    match path.split_once('/') {
        Some((dir, _)) => Some(dir),
        None => path.strip_suffix(".rs"),
    }
}

/// How many modules deep a file's top level is: `a.rs` and `a/mod.rs` are 1,
/// `a/b.rs` and `a/b/mod.rs` are 2.
fn module_depth(path: &str) -> usize {
    let parts = path.split('/').count();
    if path.ends_with("/mod.rs") {
        parts - 1
    } else {
        parts
    }
}

fn is_test_file(path: &str) -> bool {
    let mut parts = path.split('/').rev();
    parts.next() == Some("tests.rs") || parts.any(|dir| dir == "tests")
}

/// The top-level module a path names from the crate root, with the line of
/// that name: `crate::x::…` (and `$crate::x::…`), or `super::…::x::…` when its
/// `super`s climb exactly out of the top-level module (`depth` is how many
/// modules deep the path is written, inline `mod`s included).
fn crate_target(found: &PathRef, depth: usize) -> Option<(&str, usize)> {
    let segments = &found.segments;
    let rest = match segments.first().map(|(s, _)| s.as_str()) {
        Some("crate") => &segments[1..],
        Some("super") => {
            let climbs = segments.iter().take_while(|(s, _)| s == "super").count();
            if climbs != depth {
                return None;
            }
            &segments[climbs..]
        }
        _ => return None,
    };
    rest.first().map(|(name, line)| (name.as_str(), *line))
}

/// What is wrong when `from` imports `to`, if anything: who imports whom, and
/// the rule. Imports of a module outside the table are left alone: that
/// module is already reported as unknown, or the name is an item of `lib.rs`.
fn rank_rule(from: &str, to: &str, ranks: &BTreeMap<&str, u32>) -> Option<(String, &'static str)> {
    if from == to {
        return None;
    }
    let (&mine, &theirs) = (ranks.get(from)?, ranks.get(to)?);
    let rule = if mine == 0 {
        "a leaf (rank 0) imports nothing of the crate"
    } else if mine < theirs {
        "an inner stage never imports an outer one"
    } else if mine == theirs {
        "modules of the same rank never import each other"
    } else {
        return None;
    };
    Some((
        format!("{from} (rank {mine}) imports {to} (rank {theirs})"),
        rule,
    ))
}

/// The line and meaning of a forbidden name in a path, if it has one.
fn forbidden(found: &PathRef, names: &[&str]) -> Option<(usize, &'static str)> {
    for &(prefix, what) in FORBIDDEN {
        // A lone `prost` is a crate only in `use prost;` or `extern crate
        // prost;`; elsewhere it may be a local variable.
        let as_path = names.len() > 1 || found.in_use;
        if as_path && names.starts_with(prefix) {
            return Some((found.segments[prefix.len() - 1].1, what));
        }
    }
    for &(call, what) in FORBIDDEN_CALLS {
        if let Some(at) = names.windows(call.len()).position(|window| window == call) {
            return Some((found.segments[at + call.len() - 1].1, what));
        }
    }
    None
}

/// The deepest file that `crate::<segments>` names, if any.
fn resolve<'a>(segments: &[&str], files: &BTreeSet<&'a str>) -> Option<&'a str> {
    (1..=segments.len()).rev().find_map(|len| {
        let stem = segments[..len].join("/");
        [format!("{stem}.rs"), format!("{stem}/mod.rs")]
            .iter()
            .find_map(|candidate| files.get(candidate.as_str()).copied())
    })
}

/// Files and the `crate::` paths between them.
struct Graph<'a> {
    /// For each file, the files it names, with the line and path of the first
    /// mention.
    edges: BTreeMap<&'a str, BTreeMap<&'a str, (usize, String)>>,
}

impl<'a> Graph<'a> {
    fn new() -> Self {
        Self {
            edges: BTreeMap::new(),
        }
    }

    fn add(&mut self, from: &'a str, to: &'a str, line: usize, path: String) {
        self.edges
            .entry(from)
            .or_default()
            .entry(to)
            .or_insert((line, path));
    }

    fn next(&self, from: &str) -> impl Iterator<Item = &'a str> + '_ {
        self.edges
            .get(from)
            .into_iter()
            .flat_map(|to| to.keys().copied())
    }

    /// Every file reachable from `start` (itself excluded unless on a cycle).
    fn reachable(&self, start: &'a str) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&str> = self.next(start).collect();
        while let Some(file) = queue.pop_front() {
            if seen.insert(file) {
                queue.extend(self.next(file));
            }
        }
        seen
    }

    /// One problem per group of files that reach each other: the shortest
    /// cycle through its first file, each step with the line and path that
    /// makes it, and the whole group when it is larger than that cycle.
    fn cycles(&self) -> Vec<String> {
        let reach: BTreeMap<&str, BTreeSet<&str>> = self
            .edges
            .keys()
            .map(|&file| (file, self.reachable(file)))
            .collect();
        let mut done = BTreeSet::new();
        let mut problems = Vec::new();
        for (&file, reached) in &reach {
            if done.contains(file) || !reached.contains(file) {
                continue;
            }
            let group: BTreeSet<&str> = reached
                .iter()
                .copied()
                .filter(|other| reach.get(other).is_some_and(|r| r.contains(file)))
                .collect();
            done.extend(group.iter().copied());
            let cycle = self.shortest_cycle(file, &group);
            let steps: Vec<String> = cycle
                .iter()
                .map(|&(from, to)| {
                    let (line, path) = &self.edges[from][to];
                    format!("src/{from}:{line} (`{path}`)")
                })
                .collect();
            let mut problem = format!(
                "file cycle: {} -> src/{file}: files never import each other in a circle",
                steps.join(" -> ")
            );
            if group.len() > cycle.len() {
                let members: Vec<String> = group.iter().map(|f| format!("src/{f}")).collect();
                problem.push_str(&format!(
                    " ({} files reach each other: {})",
                    group.len(),
                    members.join(", ")
                ));
            }
            problems.push(problem);
        }
        problems
    }

    /// The steps of a shortest cycle from `start` back to itself within
    /// `group` (breadth first).
    fn shortest_cycle(&self, start: &'a str, group: &BTreeSet<&str>) -> Vec<(&'a str, &'a str)> {
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(file) = queue.pop_front() {
            for to in self.next(file) {
                if to == start {
                    let mut steps = vec![(file, start)];
                    let mut at = file;
                    while at != start {
                        let from = parent[at];
                        steps.push((from, at));
                        at = from;
                    }
                    steps.reverse();
                    return steps;
                }
                if group.contains(to) && !parent.contains_key(to) {
                    parent.insert(to, file);
                    queue.push_back(to);
                }
            }
        }
        Vec::new()
    }
}

// ---------------------------------------------------------------------------
// Lexing: just enough of Rust to see names and `::` outside comments and
// literals.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    /// A string, char or number literal: its content never matters.
    Literal,
    Punct(char),
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(source: &str) -> Vec<Token> {
    Lexer {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        tokens: Vec::new(),
    }
    .run()
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    tokens: Vec<Token>,
}

impl Lexer {
    fn at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// Steps over one character, counting lines.
    fn bump(&mut self) {
        if self.at(0) == Some('\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.tokens.push(Token { tok, line });
    }

    fn run(mut self) -> Vec<Token> {
        while let Some(c) = self.at(0) {
            // A token is reported at the line where it starts.
            let line = self.line;
            match c {
                '/' if self.at(1) == Some('/') => self.line_comment(),
                '/' if self.at(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.bump();
                    self.string();
                    self.push(Tok::Literal, line);
                }
                '\'' => self.quote(line),
                ':' if self.at(1) == Some(':') => {
                    self.pos += 2;
                    self.push(Tok::PathSep, line);
                }
                c if c.is_whitespace() => self.bump(),
                c if c.is_ascii_digit() => {
                    self.number();
                    self.push(Tok::Literal, line);
                }
                c if is_ident_start(c) => self.word(line),
                c => {
                    self.bump();
                    self.push(Tok::Punct(c), line);
                }
            }
        }
        self.tokens
    }

    /// `//`, `///` and `//!`, up to the end of the line.
    fn line_comment(&mut self) {
        while self.at(0).is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// `/* … */`, `/** … */`, `/*! … */`; they nest in Rust.
    fn block_comment(&mut self) {
        let mut depth = 0;
        while let Some(c) = self.at(0) {
            if c == '/' && self.at(1) == Some('*') {
                depth += 1;
                self.pos += 2;
            } else if c == '*' && self.at(1) == Some('/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// The rest of a string after its opening `"`, escapes included.
    fn string(&mut self) {
        while let Some(c) = self.at(0) {
            self.bump();
            match c {
                '\\' => self.bump(),
                '"' => return,
                _ => {}
            }
        }
    }

    /// At the `#`s or `"` after an `r`, `br` or `cr` prefix: a raw string,
    /// closed by `"` and as many `#`s as opened it. False (nothing consumed)
    /// when this is not a raw string, as in the raw identifier `r#type`.
    fn raw_string(&mut self) -> bool {
        let hashes = (0..).take_while(|&k| self.at(k) == Some('#')).count();
        if self.at(hashes) != Some('"') {
            return false;
        }
        self.pos += hashes + 1;
        while let Some(c) = self.at(0) {
            self.bump();
            if c == '"' && (0..hashes).all(|k| self.at(k) == Some('#')) {
                self.pos += hashes;
                break;
            }
        }
        true
    }

    /// At a `'`: a char literal (`'x'`, `'\n'`, `'\u{2014}'`, `'"'`), or else
    /// a lifetime or label (`'a`, `'static`), which is kept as punctuation
    /// followed by a name.
    fn quote(&mut self, line: usize) {
        if self.at(1) == Some('\\') {
            self.pos += 2;
            self.bump();
            while let Some(c) = self.at(0) {
                self.bump();
                if c == '\'' {
                    break;
                }
            }
            self.push(Tok::Literal, line);
        } else if self.at(2) == Some('\'') {
            self.pos += 3;
            self.push(Tok::Literal, line);
        } else {
            self.bump();
            self.push(Tok::Punct('\''), line);
        }
    }

    /// Digits, suffixes and a fractional part (`1.5e3f64`, `0xff_u8`), but not
    /// the `..` of a range.
    fn number(&mut self) {
        while let Some(c) = self.at(0) {
            let fraction = c == '.' && self.at(1).is_some_and(|d| d.is_ascii_digit());
            if !is_ident_continue(c) && !fraction {
                break;
            }
            self.pos += 1;
        }
    }

    /// A name, a raw identifier, or the prefix of a byte, C or raw string.
    fn word(&mut self, line: usize) {
        let start = self.pos;
        while self.at(0).is_some_and(is_ident_continue) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        match (word.as_str(), self.at(0)) {
            ("b" | "c", Some('"')) => {
                self.bump();
                self.string();
                self.push(Tok::Literal, line);
            }
            ("b", Some('\'')) => self.quote(line),
            ("r" | "br" | "cr", Some('"' | '#')) if self.raw_string() => {
                self.push(Tok::Literal, line);
            }
            ("r", Some('#')) => {
                self.pos += 1;
                let start = self.pos;
                while self.at(0).is_some_and(is_ident_continue) {
                    self.pos += 1;
                }
                let name = self.chars[start..self.pos].iter().collect();
                self.push(Tok::Ident(name), line);
            }
            _ => self.push(Tok::Ident(word), line),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

// ---------------------------------------------------------------------------
// Paths.

/// One path as written, flattened out of any `{…}` groups: its names with
/// their lines.
#[derive(Debug)]
struct PathRef {
    segments: Vec<(String, usize)>,
    /// Named by a `use` (or `extern crate`) item, where a single name is a
    /// crate or module rather than a value.
    in_use: bool,
    /// The index of the path's first token, to look up its scope.
    token: usize,
}

/// Keywords that may stand before a leading `::` (`use ::std::fs`), which a
/// path name never does.
const KEYWORDS: &[&str] = &[
    "as", "box", "break", "const", "dyn", "else", "for", "if", "impl", "in", "let", "match",
    "move", "mut", "pub", "ref", "return", "static", "type", "unsafe", "use", "where", "while",
];

fn tok(tokens: &[Token], at: usize) -> Option<&Tok> {
    tokens.get(at).map(|t| &t.tok)
}

/// Every path in the tokens, each `use` group expanded into its paths.
fn paths(tokens: &[Token]) -> Vec<PathRef> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        let Some(in_use) = path_start(tokens, at) else {
            at += 1;
            continue;
        };
        let mut trees = Vec::new();
        let end = parse_tree(tokens, at, Vec::new(), &mut trees);
        found.extend(
            trees
                .into_iter()
                .filter(|segments| !segments.is_empty())
                .map(|segments| PathRef {
                    segments,
                    in_use,
                    token: at,
                }),
        );
        // Skip the whole tree, so that names inside a group are not read
        // again as paths of their own.
        at = end.max(at + 1);
    }
    found
}

/// Whether a path starts at `at` (and if so whether a `use` names it): a
/// name that is not a field or method (`x.name`) nor the continuation of a
/// path (`a::name`, `<T>::name`), or the `{` of `use {…}`.
fn path_start(tokens: &[Token], at: usize) -> Option<bool> {
    let before = |k: usize| at.checked_sub(k).and_then(|i| tok(tokens, i));
    let is_use = |t: Option<&Tok>| matches!(t, Some(Tok::Ident(word)) if word == "use");
    match tok(tokens, at)? {
        Tok::Ident(_) => {}
        Tok::Punct('{') if is_use(before(1)) => return Some(true),
        _ => return None,
    }
    // A leading `::` (`::std::fs`) belongs to the path.
    let mut back = 1;
    if before(1) == Some(&Tok::PathSep) {
        match before(2) {
            Some(Tok::Ident(word)) if !KEYWORDS.contains(&word.as_str()) => return None,
            Some(Tok::Punct('>')) => return None,
            _ => back = 2,
        }
    }
    let prev = before(back);
    if prev == Some(&Tok::Punct('.')) {
        return None;
    }
    let extern_crate = matches!(prev, Some(Tok::Ident(w)) if w == "crate")
        && matches!(before(back + 1), Some(Tok::Ident(w)) if w == "extern");
    Some(is_use(prev) || extern_crate)
}

/// Reads a path or use tree from `at` onto `prefix`, pushing every complete
/// path to `out`; returns the index after it. A path ends before anything but
/// `::` followed by a name, `{` or `*` (so `crate::a::f::<T>()` is
/// `crate::a::f`).
fn parse_tree(
    tokens: &[Token],
    mut at: usize,
    mut prefix: Vec<(String, usize)>,
    out: &mut Vec<Vec<(String, usize)>>,
) -> usize {
    if tok(tokens, at) == Some(&Tok::PathSep) {
        at += 1;
    }
    loop {
        match tok(tokens, at) {
            Some(Tok::Ident(name)) => {
                // In `a::{self, b}`, `self` is `a` itself.
                if name != "self" || prefix.is_empty() {
                    prefix.push((name.clone(), tokens[at].line));
                }
                at += 1;
            }
            Some(Tok::Punct('{')) => return parse_group(tokens, at, &prefix, out),
            Some(Tok::Punct('*')) => {
                out.push(prefix);
                return at + 1;
            }
            _ => break,
        }
        let more = matches!(
            tok(tokens, at + 1),
            Some(Tok::Ident(_) | Tok::Punct('{' | '*'))
        );
        if tok(tokens, at) != Some(&Tok::PathSep) || !more {
            break;
        }
        at += 1;
    }
    out.push(prefix);
    at
}

/// Reads the `{…}` group opening at `open`: each item is a tree of its own
/// on the shared prefix. Returns the index after the closing `}`.
fn parse_group(
    tokens: &[Token],
    open: usize,
    prefix: &[(String, usize)],
    out: &mut Vec<Vec<(String, usize)>>,
) -> usize {
    let mut at = open + 1;
    while let Some(t) = tok(tokens, at) {
        match t {
            Tok::Punct('}') => return at + 1,
            // `X as Y`: the alias names nothing.
            Tok::Ident(word) if word == "as" => at += 2,
            Tok::Ident(_) | Tok::PathSep | Tok::Punct('{' | '*') => {
                at = parse_tree(tokens, at, prefix.to_vec(), out).max(at + 1);
            }
            _ => at += 1,
        }
    }
    at
}

/// For each token: whether it is inside an item marked `#[cfg(test)]` (or a
/// scope marked `#![cfg(test)]`), and how many inline `mod name { … }` blocks
/// enclose it.
struct Scopes {
    test: Vec<bool>,
    mod_depth: Vec<usize>,
}

fn scopes(tokens: &[Token]) -> Scopes {
    let mut test = vec![false; tokens.len()];
    let mut mod_depth = vec![0; tokens.len()];
    let mut depth = 0;
    // The brace depth inside each open inline module.
    let mut mods: Vec<usize> = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        match token.tok {
            Tok::Punct('{') => {
                depth += 1;
                let named = at >= 2 && matches!(tok(tokens, at - 1), Some(Tok::Ident(_)));
                if named && matches!(tok(tokens, at - 2), Some(Tok::Ident(w)) if w == "mod") {
                    mods.push(depth);
                }
            }
            Tok::Punct('}') => {
                if mods.last() == Some(&depth) {
                    mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        mod_depth[at] = mods.len();
        if let Some(inner) = cfg_test(tokens, at) {
            let end = item_end(tokens, at, inner);
            test[at..end].iter_mut().for_each(|t| *t = true);
        }
    }
    Scopes { test, mod_depth }
}

/// At `#[cfg(test)]`: `Some(false)`; at `#![cfg(test)]`: `Some(true)`.
fn cfg_test(tokens: &[Token], at: usize) -> Option<bool> {
    let inner = tok(tokens, at + 1) == Some(&Tok::Punct('!'));
    let start = at + 1 + usize::from(inner);
    let word = |t: &Tok, w: &str| matches!(t, Tok::Ident(x) if x == w);
    let pattern: [&dyn Fn(&Tok) -> bool; 6] = [
        &|t| *t == Tok::Punct('['),
        &|t| word(t, "cfg"),
        &|t| *t == Tok::Punct('('),
        &|t| word(t, "test"),
        &|t| *t == Tok::Punct(')'),
        &|t| *t == Tok::Punct(']'),
    ];
    let matched = tok(tokens, at) == Some(&Tok::Punct('#'))
        && pattern
            .iter()
            .enumerate()
            .all(|(k, is)| tok(tokens, start + k).is_some_and(is));
    matched.then_some(inner)
}

/// Where the item starting at `at` ends (after its `;` or closing `}`), or,
/// for an inner attribute, where its enclosing block ends.
fn item_end(tokens: &[Token], at: usize, inner: bool) -> usize {
    let mut depth = 0i32;
    for (k, token) in tokens.iter().enumerate().skip(at) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth < 0 {
                    return k;
                }
                if depth == 0 && !inner {
                    return k + 1;
                }
            }
            Tok::Punct(';') if depth == 0 && !inner => return k + 1,
            _ => {}
        }
    }
    tokens.len()
}

// ---------------------------------------------------------------------------
// The real tree.

/// Every `.rs` file under `src` (paths relative to it, `/`-separated, sorted)
/// with its source, checked.
fn check_tree(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    read_sources(src, src, &mut files);
    files.sort();
    check(&files)
}

fn read_sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            read_sources(root, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((relative, source));
        }
    }
}

#[test]
fn architecture_walls_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check_tree(&src);
    assert!(
        problems.is_empty(),
        "{} architecture wall(s) broken (see tests/it/walls.rs and ARCHITECTURE.md):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The checker on fixtures: every rule fails when broken and passes when kept.

fn run(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(path, source)| (path.to_string(), source.to_string()))
        .collect();
    check(&files)
}

/// Asserts exactly the given problems, each found by a part of its text.
fn assert_problems(problems: &[String], expected: &[&str]) {
    assert_eq!(
        problems.len(),
        expected.len(),
        "expected {expected:#?}, got {problems:#?}"
    );
    for (problem, part) in problems.iter().zip(expected) {
        assert!(problem.contains(part), "expected `{part}` in `{problem}`");
    }
}

#[test]
fn upward_import_fails() {
    let problems = run(&[
        ("analyze.rs", ""),
        (
            "detect/incident.rs",
            "use std::fmt;\nuse crate::analyze::rca::Rca;\n",
        ),
    ]);
    assert_problems(
        &problems,
        &[
            "src/detect/incident.rs:2: detect (rank 3) imports analyze (rank 4) via \
           `crate::analyze::rca::Rca`: an inner stage never imports an outer one",
        ],
    );
}

#[test]
fn same_rank_import_fails() {
    let problems = run(&[
        ("ingest.rs", "pub use crate::detect::Engine;\n"),
        ("model.rs", "use crate::telemetry::names;\n"),
    ]);
    assert_problems(
        &problems,
        &[
            "src/ingest.rs:1: ingest (rank 3) imports detect (rank 3) via `crate::detect::Engine`: \
             modules of the same rank never import each other",
            "src/model.rs:1: model (rank 0) imports telemetry (rank 0) via \
             `crate::telemetry::names`: a leaf (rank 0) imports nothing of the crate",
        ],
    );
}

#[test]
fn grouped_use_over_several_lines_fails() {
    let source = "use crate::{\n    model::Sample,\n    store::{Store, window::Ring},\n    \
                  pipeline::{self, Pipeline as P},\n};\n";
    let problems = run(&[("detect/engine.rs", source)]);
    assert_problems(
        &problems,
        &[
            "src/detect/engine.rs:4: detect (rank 3) imports pipeline (rank 5) via \
             `crate::pipeline`:",
            "src/detect/engine.rs:4: detect (rank 3) imports pipeline (rank 5) via \
             `crate::pipeline::Pipeline`:",
        ],
    );
}

#[test]
fn inline_crate_paths_fail() {
    let source = "fn f(engine: &crate::detect::Engine) {\n    \
                  let _ = crate::receiver::decode::<u8>(engine);\n}\n";
    let problems = run(&[("store/mod.rs", source)]);
    assert_problems(
        &problems,
        &[
            "src/store/mod.rs:1: store (rank 1) imports detect (rank 3)",
            "src/store/mod.rs:2: store (rank 1) imports receiver (rank 2) via \
             `crate::receiver::decode`",
        ],
    );
}

#[test]
fn super_out_of_a_top_level_module_is_an_import() {
    let top = "use super::analyze::Rca;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n";
    let nested = "use super::super::super::pipeline::Run;\nuse super::engine::Engine;\n";
    let problems = run(&[("ingest.rs", top), ("ingest/spans/buffer.rs", nested)]);
    assert_problems(
        &problems,
        &[
            "src/ingest.rs:1: ingest (rank 3) imports analyze (rank 4)",
            "src/ingest/spans/buffer.rs:1: ingest (rank 3) imports pipeline (rank 5)",
        ],
    );
}

#[test]
fn downward_and_internal_imports_pass() {
    let source = "use crate::{analyze::Rca, detect::{self, Engine}, model::*};\n\
                  use crate::pipeline::stage::{Stage as _};\n\
                  use self::run::Run;\nuse super::pipeline;\n\
                  pub(crate) fn f() -> crate::store::Store { crate::receiver::open() }\n\
                  macro_rules! m { () => { $crate::ingest::x() }; }\n";
    let problems = run(&[
        ("replay.rs", source),
        (
            "replay/run.rs",
            "use crate::replay::Options;\nuse super::Options;\n",
        ),
        ("lib.rs", "pub mod replay;\nuse crate::server::run;\n"),
        ("main.rs", "use triage::server;\n"),
    ]);
    assert_problems(&problems, &[]);
}

#[test]
fn protobuf_in_store_fails() {
    let source = "use prost::Message;\n#[derive(Clone, ::prost::Message)]\nstruct A;\n\
                  use opentelemetry_proto::tonic::trace::v1::Span;\nextern crate rusqlite;\n";
    let problems = run(&[("store/window.rs", source)]);
    assert_problems(
        &problems,
        &[
            "src/store/window.rs:1: store uses `prost::Message` (protobuf): an inner stage",
            "src/store/window.rs:2: store uses `prost::Message` (protobuf)",
            "src/store/window.rs:4: store uses `opentelemetry_proto::tonic::trace::v1::Span`",
            "src/store/window.rs:5: store uses `rusqlite` (SQLite)",
        ],
    );
}

#[test]
fn file_io_in_detect_fails() {
    let source = "use std::{\n    collections::HashMap,\n    fs,\n};\n\
                  fn f() { let _ = std::fs::read(\"x\"); }\nuse tokio::{sync::broadcast, time};\n";
    let problems = run(&[("detect/rules.rs", source)]);
    assert_problems(
        &problems,
        &[
            "src/detect/rules.rs:3: detect uses `std::fs` (file I/O)",
            "src/detect/rules.rs:5: detect uses `std::fs::read` (file I/O)",
            "src/detect/rules.rs:6: detect uses `tokio::time` (the clock)",
        ],
    );
}

#[test]
fn clock_in_analyze_fails() {
    let source = "use std::time::{Duration, Instant};\n\
                  fn f() -> Instant { let a = std::time::SystemTime::now();\n    Instant::now() }\n\
                  fn g(now: Instant) -> Duration { now.elapsed() }\n";
    let problems = run(&[("analyze/rca.rs", source)]);
    assert_problems(
        &problems,
        &[
            "src/analyze/rca.rs:2: analyze uses `std::time::SystemTime::now` (the clock)",
            "src/analyze/rca.rs:3: analyze uses `Instant::now` (the clock)",
        ],
    );
}

#[test]
fn io_outside_inner_stages_and_in_tests_passes() {
    let io = "use prost::Message;\nuse std::{fs, net::TcpListener};\n\
              fn f() { let _ = std::time::Instant::now(); tokio::time::sleep(d); }\n";
    let store = "use tokio::sync::broadcast;\nfn f(now: std::time::Instant) {}\n\
                 #[cfg(test)]\nmod tests {\n    use std::fs;\n    fn t() { Instant::now(); }\n}\n\
                 #[cfg(test)]\nfn helper() -> Vec<u8> { std::fs::read(\"x\").unwrap() }\n";
    let problems = run(&[
        ("receiver/grpc.rs", io),
        ("server.rs", io),
        ("store/mod.rs", store),
        ("store/tests.rs", io),
        ("detect/tests/fixtures.rs", io),
    ]);
    assert_problems(&problems, &[]);
}

#[test]
fn code_after_a_cfg_test_item_is_checked_again() {
    let source = "#[cfg(test)]\nmod tests {\n    use std::fs;\n}\nuse std::fs;\n";
    let problems = run(&[("model.rs", source)]);
    assert_problems(&problems, &["src/model.rs:5: model uses `std::fs`"]);
}

#[test]
fn test_code_obeys_the_import_walls() {
    let problems = run(&[("store/tests.rs", "use crate::detect::Engine;\n")]);
    assert_problems(
        &problems,
        &["src/store/tests.rs:1: store (rank 1) imports detect"],
    );
}

#[test]
fn unknown_top_level_module_fails() {
    let problems = run(&[
        ("sim.rs", "use crate::store::Store;\n"),
        ("sim/traffic.rs", ""),
        ("server.rs", "use crate::sim::Simulator;\n"),
    ]);
    assert_problems(
        &problems,
        &[
            "src/sim.rs: unknown top-level module `sim`: add it with its rank to MODULES in \
           tests/it/walls.rs and to the \"Invariants\" of ARCHITECTURE.md",
        ],
    );
}

#[test]
fn file_cycle_fails() {
    let problems = run(&[
        ("detect/mod.rs", "pub use crate::detect::engine::Engine;\n"),
        ("detect/engine.rs", "\nuse crate::detect::stats::mean;\n"),
        (
            "detect/stats.rs",
            "fn f() { crate::detect::Config::default(); }\n",
        ),
        ("detect/rules.rs", "use crate::detect::stats::mean;\n"),
    ]);
    assert_problems(
        &problems,
        &[
            "file cycle: src/detect/engine.rs:2 (`crate::detect::stats::mean`) -> \
           src/detect/stats.rs:1 (`crate::detect::Config::default`) -> \
           src/detect/mod.rs:1 (`crate::detect::engine::Engine`) -> src/detect/engine.rs: \
           files never import each other in a circle",
        ],
    );
}

#[test]
fn files_in_a_chain_pass() {
    let problems = run(&[
        ("detect.rs", "use crate::detect::engine::Engine;\n"),
        (
            "detect/engine.rs",
            "use crate::detect::stats;\nuse super::Config;\n",
        ),
        ("detect/stats.rs", "use crate::store::Store;\n"),
        ("store.rs", "use self::window::Ring;\n"),
        ("store/window.rs", "use super::Store;\n"),
    ]);
    assert_problems(&problems, &[]);
}

#[test]
fn comments_docs_and_strings_do_not_count() {
    let source = r####"//! Unlike `crate::analyze`, detection never uses std::fs.
/// ```
/// use crate::pipeline::Run;
/// let t = std::time::Instant::now();
/// ```
// crate::server::run(); prost::Message
/* crate::alert /* nested: crate::query */ still a comment: std::fs */
/** crate::admin */
fn f<'a>(x: &'a str) -> &'static str {
    let _ = "crate::analyze::x std::fs::read Instant::now() \" crate::server";
    let _ = r#"crate::analyze "quoted" std::net"#;
    let _ = br##"crate::server "# std::process"##;
    let _ = b"crate::config";
    let _ = c"crate::query";
    let _ = ['"', '\'', '\\', b'"', '\u{2014}'];
    'outer: loop { break 'outer; }
    x
}
use crate::store::Store;
use crate::config::Settings;
"####;
    let problems = run(&[("detect/mod.rs", source)]);
    // Only the last line is a real breach: the lexer kept its place.
    assert_problems(
        &problems,
        &["src/detect/mod.rs:20: detect (rank 3) imports config (rank 8)"],
    );
}

#[test]
fn lexer_reads_names_past_tricky_literals() {
    let tokens = lex("let r#type = 'a'; fn g<'b>() {} 1..2 0.5e3 r\"x\" b'y' /* */ z::w");
    let names: Vec<&str> = tokens
        .iter()
        .filter_map(|t| match &t.tok {
            Tok::Ident(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["let", "type", "fn", "g", "b", "z", "w"]);
    assert!(tokens.iter().any(|t| t.tok == Tok::PathSep));
}
