//! Walks an OTLP/JSON export request before it is decoded: counts its items
//! and estimates what the general decoder (`decode::decode_json`) will
//! allocate, refusing it as soon as it crosses the [`Limits`] (see
//! `decode::limits`). The walk allocates nothing.
//!
//! The general decoder holds three trees at once, and each is counted:
//!
//! - the `serde_json::Value` of the whole document: a 32-byte value in its
//!   array or object for every JSON value, a B-tree node (about 640 bytes)
//!   for every object with members, a copy of every string and key;
//! - serde's buffers for flattened oneofs: the derive reads `AnyValue`,
//!   `Metric`, `NumberDataPoint` and `Exemplar` through
//!   `#[serde(flatten)]`, which first copies the structure of their
//!   members (not the strings, which it borrows) into a buffer, so a value
//!   nested in `n` of them is copied `n` times;
//! - the prost request, as for protobuf (`decode::schema`).
//!
//! Invariant: the walk reads every document `serde_json` reads the same
//! way, and stops (letting the request through to be refused by the
//! decoder, with its precise message) only where `serde_json` fails too:
//! JSON it cannot parse, or nesting deeper than its recursion limit.
//! Everything before that point has been counted.

use std::mem::size_of;

use crate::receiver::decode::limits::{growth, heap, Budget, Limits, Measured, OverLimit};
use crate::receiver::decode::schema::{Field, Message};

/// `serde_json` refuses documents nested deeper than this.
const RECURSION_LIMIT: u32 = 128;

/// The size of `serde_json::Value`.
const VALUE: usize = size_of::<serde_json::Value>();

/// A B-tree leaf of `serde_json::Map`: 11 keys, 11 values, a parent link
/// and two counts.
const NODE: usize = 11 * (size_of::<String>() + VALUE) + 16;

/// serde's private `Content` (a 24-byte payload and a tag): an element of a
/// buffered array, or half of a buffered object member.
const CONTENT: usize = 32;

/// Why a walk stopped.
enum Stop {
    Over(OverLimit),
    /// JSON `serde_json` refuses too.
    Malformed,
}

impl From<OverLimit> for Stop {
    fn from(over: OverLimit) -> Self {
        Stop::Over(over)
    }
}

/// How the decoder uses a JSON value.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A message, decoded in place (its container counted it).
    Message(Message),
    /// A list of messages.
    Messages(Message),
    /// A string or bytes, copied.
    Bytes,
    /// A list of strings.
    Strings,
    /// A list of 8-byte numbers.
    Numbers,
    /// Only the `Value` tree holds it: a scalar, or a member no field reads.
    Value,
}

impl Slot {
    fn of(field: Field) -> Slot {
        match field {
            Field::Inline(message) => Slot::Message(message),
            Field::Repeated(message) => Slot::Messages(message),
            Field::Bytes => Slot::Bytes,
            Field::RepeatedBytes => Slot::Strings,
            Field::RepeatedNumber { .. } => Slot::Numbers,
            Field::Other => Slot::Value,
        }
    }
}

/// Checks an OTLP/JSON request of type `root` (an `Export*ServiceRequest`)
/// against `limits` before the general decoder decodes it.
pub fn measure(body: &[u8], root: Message, limits: Limits) -> Result<Measured, OverLimit> {
    let mut walk = Walk {
        bytes: body,
        at: 0,
        budget: Budget::new(limits, root.items_name(), "JSON", body.len()),
    };
    match walk.value(Slot::Message(root), 0, 0) {
        Err(Stop::Over(over)) => Err(over),
        Ok(()) | Err(Stop::Malformed) => Ok(walk.budget.measured()),
    }
}

/// A position in the document and the account so far.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    budget: Budget,
}

impl Walk<'_> {
    fn peek(&mut self) -> Result<u8, Stop> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
        self.bytes.get(self.at).copied().ok_or(Stop::Malformed)
    }

    /// One value used as `slot`, inside `copies` flattened messages, at
    /// `depth` containers deep.
    fn value(&mut self, slot: Slot, copies: usize, depth: u32) -> Result<(), Stop> {
        match self.peek()? {
            b'{' => self.object(slot, copies, depth + 1),
            b'[' => self.array(slot, copies, depth + 1),
            b'"' => {
                let len = self.string(None)?;
                // The `Value` holds a copy; a field reading it holds another
                // (hex ids and base64 decode shorter).
                let copies = if matches!(slot, Slot::Bytes) { 2 } else { 1 };
                self.budget.charge(copies * heap(len))?;
                Ok(())
            }
            // Numbers, `true`, `false`, `null`: checked by serde_json.
            _ => {
                let rest = &self.bytes[self.at..];
                let len = rest
                    .iter()
                    .position(|byte| !matches!(byte, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.'))
                    .unwrap_or(rest.len());
                if len == 0 {
                    return Err(Stop::Malformed);
                }
                self.at += len;
                Ok(())
            }
        }
    }

    fn object(&mut self, slot: Slot, copies: usize, depth: u32) -> Result<(), Stop> {
        if depth > RECURSION_LIMIT {
            return Err(Stop::Malformed);
        }
        self.at += 1;
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(());
        }
        let message = match slot {
            Slot::Message(message) => Some(message),
            _ => None,
        };
        let mut members = 0usize;
        loop {
            if self.peek()? != b'"' {
                return Err(Stop::Malformed);
            }
            let mut name = Name::default();
            let key_len = self.string(Some(&mut name))?;
            let name = name.as_bytes();
            if self.peek()? != b':' {
                return Err(Stop::Malformed);
            }
            self.at += 1;
            // The map's nodes: one for the first 11 members, then one more
            // for at most every 5 (B-tree nodes are at least half full).
            if members == 0 || (members >= 11 && (members - 11).is_multiple_of(5)) {
                self.budget.charge(heap(NODE))?;
            }
            members += 1;
            self.budget.charge(heap(key_len))?;
            let (slot, copies) = match message {
                Some(message) => (
                    Slot::of(message.member(name)),
                    copies + usize::from(message.buffers(name)),
                ),
                None => (Slot::Value, copies),
            };
            // A buffered member: a key and a value in a growing vector.
            self.budget.charge(copies * 4 * CONTENT)?;
            self.value(slot, copies, depth)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Malformed),
            }
        }
    }

    fn array(&mut self, slot: Slot, copies: usize, depth: u32) -> Result<(), Stop> {
        if depth > RECURSION_LIMIT {
            return Err(Stop::Malformed);
        }
        self.at += 1;
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(());
        }
        let mut len = 0usize;
        loop {
            self.budget.charge(growth(len, 1, VALUE))?;
            // A buffered element, in a growing vector.
            self.budget.charge(copies * 2 * CONTENT)?;
            let element = match slot {
                Slot::Messages(message) => {
                    self.budget.charge(growth(len, 1, message.size()))?;
                    if message.is_item() {
                        self.budget.item()?;
                    }
                    Slot::Message(message)
                }
                Slot::Strings => {
                    self.budget.charge(growth(len, 1, size_of::<String>()))?;
                    Slot::Bytes
                }
                Slot::Numbers => {
                    self.budget.charge(growth(len, 1, 8))?;
                    Slot::Value
                }
                _ => Slot::Value,
            };
            len += 1;
            self.value(element, copies, depth)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Malformed),
            }
        }
    }

    /// Steps over a string at the current position, returning its length
    /// as written (at least that of its text). With `name`, also unescapes
    /// it there, so that an escaped member name is matched as serde_json
    /// reads it.
    fn string(&mut self, mut name: Option<&mut Name>) -> Result<usize, Stop> {
        self.at += 1;
        let start = self.at;
        loop {
            let rest = &self.bytes[self.at..];
            let run = memchr::memchr2(b'"', b'\\', rest).ok_or(Stop::Malformed)?;
            if let Some(name) = name.as_deref_mut() {
                rest[..run].iter().for_each(|byte| name.push(*byte));
            }
            self.at += run;
            if rest[run] == b'"' {
                break;
            }
            // An escape: `\uXXXX` or one character.
            let escape = *self.bytes.get(self.at + 1).ok_or(Stop::Malformed)?;
            let (byte, len) = match escape {
                b'u' => {
                    let code = self
                        .bytes
                        .get(self.at + 2..self.at + 6)
                        .and_then(|digits| std::str::from_utf8(digits).ok())
                        .and_then(|digits| u32::from_str_radix(digits, 16).ok());
                    // Only ASCII spells an OTLP name; anything else stands
                    // in as a byte that matches none.
                    let byte = code.and_then(|code| u8::try_from(code).ok());
                    (byte.filter(u8::is_ascii).unwrap_or(0xff), 6)
                }
                b'b' => (0x08, 2),
                b'f' => (0x0c, 2),
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                other => (other, 2),
            };
            if let Some(name) = name.as_deref_mut() {
                name.push(byte);
            }
            self.at = (self.at + len).min(self.bytes.len());
        }
        let len = self.at - start;
        self.at += 1;
        Ok(len)
    }
}

/// A member name, unescaped. OTLP names are short: a longer one is kept
/// as too long, and matches no field.
#[derive(Default)]
struct Name {
    bytes: [u8; 24],
    len: usize,
}

impl Name {
    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
        }
        self.len = self.len.saturating_add(1);
    }

    /// The name; empty (no field's) when it did not fit.
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}
