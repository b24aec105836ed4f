//! A validating pull reader for one JSON document, borrowing from it.
//!
//! The fast OTLP/JSON readers (`receiver::json`) walk a line with it: they
//! match the members they need and skip everything else, checking the JSON
//! grammar as they go, so a malformed line is never half-read into records.
//! Strings are handed out as `&str` slices of the input when they hold no
//! escape; a kept string with an escape (rare in OTLP) is reported as
//! [`Unreadable`], and the caller falls back to a slower reader that
//! unescapes. The input is UTF-8 checked once, as a whole, by the caller
//! (it is a `&str`), so no string is checked twice.
//!
//! `null` reads as absent wherever a value is expected (the protobuf JSON
//! mapping's rule): an absent object, an empty list, a missing number.

/// The fast reader cannot read this input (malformed JSON, or a form it
/// leaves to the general decoder, which explains the problem precisely).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreadable;

/// What every scanning step returns.
pub(crate) type Scan<T> = Result<T, Unreadable>;

/// A position in a JSON document. Copying it saves the position, so a value
/// can be skipped now and read later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        let bytes = self.bytes();
        // Compact JSON has none: one comparison decides.
        if bytes.get(self.at).is_some_and(|byte| *byte > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Scan<u8> {
        self.skip_whitespace();
        self.bytes().get(self.at).copied().ok_or(Unreadable)
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Scan<()> {
        if self.peek()? == byte {
            self.at += 1;
            Ok(())
        } else {
            Err(Unreadable)
        }
    }

    fn literal(&mut self, word: &str) -> Scan<()> {
        if self.bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Unreadable)
        }
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self) -> Scan<bool> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Checks that only whitespace is left.
    pub(crate) fn end(&mut self) -> Scan<()> {
        self.skip_whitespace();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(Unreadable)
        }
    }

    /// Reads an object (or `null`, as no members), calling `member` with
    /// the scanner at each member's value, which it must consume.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Scan<()>,
    ) -> Scan<()> {
        if self.null()? {
            return Ok(());
        }
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(());
        }
        self.members(&mut member)
    }

    /// Reads an object like [`Scanner::object`], expecting its members in
    /// the order of `names` (some may be missing), as exporters write them:
    /// the protobuf field order. While they come so, written compactly, each
    /// member's name is matched as a literal `"name":` where it is expected,
    /// without scanning it as a string and looking it up. At the first
    /// member that does not, reading goes on as `object` does; every member
    /// is handed to `member` once either way, in input order.
    pub(crate) fn object_in_order(
        &mut self,
        names: &[&'static str],
        mut member: impl FnMut(&mut Self, &'a str) -> Scan<()>,
    ) -> Scan<()> {
        let bytes = self.bytes();
        if bytes.get(self.at) != Some(&b'{') {
            return self.object(member);
        }
        let mut next = 0;
        let mut at = self.at + 1;
        loop {
            let found = names[next..]
                .iter()
                .position(|name| is_member_name(&bytes[at..], name));
            let Some(offset) = found else {
                // Not where expected: the general loop from this member on
                // (or, before the first, from the start).
                if next == 0 {
                    return self.object(member);
                }
                self.at = at;
                return self.members(&mut member);
            };
            let name = names[next + offset];
            next += offset + 1;
            self.at = at + name.len() + 3;
            member(self, name)?;
            match bytes.get(self.at) {
                Some(b',') => at = self.at + 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.after_member(&mut member),
            }
        }
    }

    /// The members of an object from the first one's name on, to the
    /// closing brace.
    fn members(&mut self, member: &mut impl FnMut(&mut Self, &'a str) -> Scan<()>) -> Scan<()> {
        loop {
            if self.peek()? != b'"' {
                return Err(Unreadable);
            }
            // Keys are OTLP field names: one with an escape is not one we
            // could match, so it is left to the general decoder.
            let key = self.raw_string()?.ok_or(Unreadable)?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// The rest of an object after a member's value: a comma and more
    /// members, or the closing brace.
    fn after_member(
        &mut self,
        member: &mut impl FnMut(&mut Self, &'a str) -> Scan<()>,
    ) -> Scan<()> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                self.members(member)
            }
            b'}' => {
                self.at += 1;
                Ok(())
            }
            _ => Err(Unreadable),
        }
    }

    /// Reads an array (or `null`, as empty), calling `item` with the
    /// scanner at each item, which it must consume.
    pub(crate) fn array(&mut self, mut item: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        if self.null()? {
            return Ok(());
        }
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// A string at the current position (after whitespace): `Some` without
    /// escapes, `None` with (the string is consumed and checked either way).
    #[inline(always)]
    fn raw_string(&mut self) -> Scan<Option<&'a str>> {
        self.eat(b'"')?;
        let bytes = self.bytes();
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += plain_run(&bytes[self.at..]);
            let byte = *bytes.get(self.at).ok_or(Unreadable)?;
            match byte {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    match bytes.get(self.at).ok_or(Unreadable)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let digits = bytes.get(self.at + 1..self.at + 5).ok_or(Unreadable)?;
                            if !digits.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Unreadable);
                            }
                            self.at += 5;
                        }
                        _ => return Err(Unreadable),
                    }
                }
                // Control characters must be escaped in JSON strings.
                0..=0x1f => return Err(Unreadable),
                _ => self.at += 1,
            }
        }
        let end = self.at;
        self.at += 1;
        if escaped {
            Ok(None)
        } else {
            // Both ends are at ASCII quotes, so this slice is on character
            // boundaries and `get` cannot fail.
            self.text.get(start..end).map(Some).ok_or(Unreadable)
        }
    }

    /// An `AnyValue` written the way exporters write most of them, compact
    /// `{"stringValue":"text"}` with no escape in the text, read in one
    /// step: the text, the scanner past the closing brace. `None`, with the
    /// scanner where it was, for anything else (spaces, other members, an
    /// escape), which the general readers then take.
    #[inline]
    pub(crate) fn compact_string_value(&mut self) -> Option<&'a str> {
        const OPEN: &[u8] = br#"{"stringValue":""#;
        let bytes = self.bytes();
        if !bytes.get(self.at..)?.starts_with(OPEN) {
            return None;
        }
        let start = self.at + OPEN.len();
        let end = plain_end(bytes, start);
        if bytes.get(end..end + 2) != Some(&b"\"}"[..]) {
            return None;
        }
        // Both ends are at ASCII quotes: on character boundaries.
        let text = self.text.get(start..end)?;
        self.at = end + 2;
        Some(text)
    }

    /// The start of a `KeyValue` written the way exporters write them,
    /// compact `{"key":"name","value":` with no escape in the name: the
    /// name, the scanner at the value. `None`, with the scanner where it
    /// was, for anything else, which `object_in_order` then takes. After
    /// the value, [`Scanner::close_object`] reads the rest.
    #[inline]
    pub(crate) fn compact_key(&mut self) -> Option<&'a str> {
        const OPEN: &[u8] = br#"{"key":""#;
        const VALUE: &[u8] = br#"","value":"#;
        let bytes = self.bytes();
        if !bytes.get(self.at..)?.starts_with(OPEN) {
            return None;
        }
        let start = self.at + OPEN.len();
        let end = plain_end(bytes, start);
        if !bytes.get(end..)?.starts_with(VALUE) {
            return None;
        }
        // Both ends are at ASCII quotes: on character boundaries.
        let key = self.text.get(start..end)?;
        self.at = end + VALUE.len();
        Some(key)
    }

    /// The rest of an object whose members so far were read by a fast
    /// path: its closing brace, or more members, each handed to `member`.
    #[inline]
    pub(crate) fn close_object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Scan<()>,
    ) -> Scan<()> {
        if self.bytes().get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(());
        }
        self.after_member(&mut member)
    }

    /// A string (or `null`, as `None`) without escapes.
    pub(crate) fn str(&mut self) -> Scan<Option<&'a str>> {
        if self.null()? {
            return Ok(None);
        }
        if self.peek()? != b'"' {
            return Err(Unreadable);
        }
        self.raw_string()?.map(Some).ok_or(Unreadable)
    }

    /// A JSON number token, checked against the grammar.
    fn number_token(&mut self) -> Scan<&'a str> {
        self.skip_whitespace();
        let bytes = self.bytes();
        let start = self.at;
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > from
        };
        let mut at = start;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        if bytes.get(at) == Some(&b'0') {
            at += 1;
        } else if !digits(&mut at) {
            return Err(Unreadable);
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return Err(Unreadable);
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            if !digits(&mut at) {
                return Err(Unreadable);
            }
        }
        self.at = at;
        self.text.get(start..at).ok_or(Unreadable)
    }

    /// Skips any value, checking it.
    pub(crate) fn skip(&mut self) -> Scan<()> {
        match self.peek()? {
            b'{' => {
                if self.compact_string_value().is_some() {
                    return Ok(());
                }
                self.object(|scanner, _| scanner.skip())
            }
            b'[' => self.array(Self::skip),
            b'"' => self.raw_string().map(drop),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number_token().map(drop),
        }
    }

    /// An unsigned 64-bit integer written as a number or a decimal string
    /// (`null` is `None`).
    pub(crate) fn u64(&mut self) -> Scan<Option<u64>> {
        match self.integer()? {
            None => Ok(None),
            Some((true, magnitude)) if magnitude != 0 => Err(Unreadable),
            Some((_, magnitude)) => Ok(Some(magnitude)),
        }
    }

    /// A signed 64-bit integer written as a number or a decimal string.
    pub(crate) fn i64(&mut self) -> Scan<Option<i64>> {
        self.integer()?
            .map(|(negative, magnitude)| {
                if negative {
                    0i64.checked_sub_unsigned(magnitude).ok_or(Unreadable)
                } else {
                    i64::try_from(magnitude).map_err(|_| Unreadable)
                }
            })
            .transpose()
    }

    /// A 32-bit integer (or an enum by number) written as a number or a
    /// decimal string.
    pub(crate) fn i32(&mut self) -> Scan<Option<i32>> {
        self.i64()?
            .map(|value| i32::try_from(value).map_err(|_| Unreadable))
            .transpose()
    }

    /// An unsigned 32-bit integer written as a number or a decimal string.
    pub(crate) fn u32(&mut self) -> Scan<Option<u32>> {
        self.u64()?
            .map(|value| u32::try_from(value).map_err(|_| Unreadable))
            .transpose()
    }

    /// An enum: its number (as a number or a decimal string) or its name,
    /// looked up with `by_name`.
    pub(crate) fn enumeration(
        &mut self,
        by_name: impl Fn(&str) -> Option<i32>,
    ) -> Scan<Option<i32>> {
        if self.peek()? == b'"' {
            let mut probe = *self;
            let text = probe.str()?.ok_or(Unreadable)?;
            if let Some(value) = by_name(text) {
                *self = probe;
                return Ok(Some(value));
            }
        }
        self.i32()
    }

    /// The sign and magnitude of an integer written as a number or a
    /// decimal string. Fractions and exponents are left to the general
    /// decoder.
    fn integer(&mut self) -> Scan<Option<(bool, u64)>> {
        let text = match self.peek()? {
            b'n' => {
                self.literal("null")?;
                return Ok(None);
            }
            b'"' => self.raw_string()?.ok_or(Unreadable)?,
            _ => self.number_token()?,
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if digits.is_empty() || digits.len() > 20 {
            return Err(Unreadable);
        }
        if digits.len() <= 19 {
            // Below 10^19, no overflow: eight digits at a time (timestamps
            // in nanoseconds have nineteen), then one at a time.
            let mut chunks = digits.as_bytes().chunks_exact(8);
            let mut magnitude: u64 = 0;
            for chunk in &mut chunks {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(chunk);
                magnitude = magnitude * 100_000_000 + eight_digits(eight).ok_or(Unreadable)?;
            }
            for &byte in chunks.remainder() {
                if !byte.is_ascii_digit() {
                    return Err(Unreadable);
                }
                magnitude = magnitude * 10 + u64::from(byte - b'0');
            }
            return Ok(Some((negative, magnitude)));
        }
        let mut magnitude: u64 = 0;
        for byte in digits.bytes() {
            if !byte.is_ascii_digit() {
                return Err(Unreadable);
            }
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(byte - b'0')))
                .ok_or(Unreadable)?;
        }
        Ok(Some((negative, magnitude)))
    }

    /// A double written as a number or a string (decimal, `NaN`,
    /// `Infinity`, `-Infinity`).
    pub(crate) fn f64(&mut self) -> Scan<Option<f64>> {
        let text = match self.peek()? {
            b'n' => {
                self.literal("null")?;
                return Ok(None);
            }
            b'"' => {
                let text = self.raw_string()?.ok_or(Unreadable)?;
                return match text {
                    "NaN" => Ok(Some(f64::NAN)),
                    "Infinity" => Ok(Some(f64::INFINITY)),
                    "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
                    _ => {
                        // Only a JSON number inside the quotes.
                        let mut inner = Scanner::new(text);
                        inner.number_token()?;
                        inner.end()?;
                        text.parse().map(Some).map_err(|_| Unreadable)
                    }
                };
            }
            _ => self.number_token()?,
        };
        let value: f64 = text.parse().map_err(|_| Unreadable)?;
        // serde_json refuses numbers out of the f64 range (`1e999`).
        if value.is_finite() {
            Ok(Some(value))
        } else {
            Err(Unreadable)
        }
    }

    /// `true` or `false` (`null` is `None`).
    pub(crate) fn bool(&mut self) -> Scan<Option<bool>> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| Some(true)),
            b'f' => self.literal("false").map(|()| Some(false)),
            b'n' => self.literal("null").map(|()| None),
            _ => Err(Unreadable),
        }
    }

    /// A hex id of at most 16 bytes (either case), decoded and appended to
    /// `ids`; returns where it is there. `null` and `""` are an empty id.
    pub(crate) fn hex_id(&mut self, ids: &mut Vec<u8>) -> Scan<IdRange> {
        let start = ids.len() as u32;
        let Some(text) = self.str()? else {
            return Ok(IdRange { start, len: 0 });
        };
        if text.len() % 2 != 0 || text.len() > 32 {
            return Err(Unreadable);
        }
        let mut id = [0u8; 16];
        let len = text.len() / 2;
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let (high, low) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
            if (high | low) & 0xf0 != 0 {
                return Err(Unreadable);
            }
            *byte = high << 4 | low;
        }
        ids.extend_from_slice(&id[..len]);
        Ok(IdRange {
            start,
            len: len as u8,
        })
    }
}

/// Whether `bytes` starts with the member name `"name":`.
#[inline(always)]
fn is_member_name(bytes: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    bytes.len() > name.len() + 2
        && bytes[0] == b'"'
        && same_bytes(&bytes[1..=name.len()], name)
        && bytes[name.len() + 1] == b'"'
        && bytes[name.len() + 2] == b':'
}

/// Whether two slices of the same length hold the same bytes, compared a
/// word at a time (the last word overlapping the one before): member
/// names are short, and a call to `memcmp` for each would cost more.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = b.len();
    if a.len() != n {
        return false;
    }
    if n >= 8 {
        let word = |bytes: &[u8], at: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(eight)
        };
        let mut at = 0;
        while at + 8 < n {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        let word = |bytes: &[u8], at: usize| {
            let mut four = [0u8; 4];
            four.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(four)
        };
        word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4)
    } else {
        a.iter().zip(b).all(|(x, y)| x == y)
    }
}

/// How many bytes at the start of `bytes` need no attention inside a JSON
/// string: no quote, no backslash, no control character. Looks at eight
/// bytes at a time (most of a line is string contents), then stops at the
/// first word holding one; the caller looks at that byte itself.
#[inline(always)]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_le_bytes(eight);
        // A byte is zero in `x` exactly where `(x - ONES) & !x & HIGH` has
        // its high bit; below 0x20 likewise with `x - 0x20 * ONES`. Borrows
        // can only mark bytes after a true one, so the lowest mark is exact.
        let quote = word ^ (u64::from(b'"') * ONES);
        let backslash = word ^ (u64::from(b'\\') * ONES);
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(0x20 * ONES) & !word);
        let special = special & HIGH;
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

/// Where the string contents starting at `start` end: the first quote,
/// backslash or control byte at or after it (or the end of `bytes`).
#[inline(always)]
fn plain_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start + plain_run(&bytes[start..]);
    // Past the last whole word `plain_run` leaves the bytes to us.
    while bytes
        .get(end)
        .is_some_and(|&byte| !matches!(byte, b'"' | b'\\' | 0..=0x1f))
    {
        end += 1;
    }
    end
}

/// The value of eight ASCII decimal digits (the first the most
/// significant), or `None` if any byte is not one: the digits are checked
/// and combined in pairs, fours and eights within one word.
#[inline(always)]
fn eight_digits(bytes: [u8; 8]) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    let word = u64::from_le_bytes(bytes);
    // A digit is 0x30..=0x39: high nibble 3, and still 3 after adding 6
    // (which cannot carry out of a byte whose high nibble is 3).
    if word & HIGH_NIBBLES != ZEROS
        || word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES != ZEROS
    {
        return None;
    }
    let mut value = word - ZEROS;
    value = (value.wrapping_mul(10) + (value >> 8)) & 0x00ff_00ff_00ff_00ff;
    value = (value.wrapping_mul(100) + (value >> 16)) & 0x0000_ffff_0000_ffff;
    value = (value.wrapping_mul(10_000) + (value >> 32)) & 0xffff_ffff;
    Some(value)
}

/// The value of each hex digit byte (either case); 0xff for other bytes.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut digit = 0;
    while digit < 16 {
        let value = digit as u8;
        table[b"0123456789abcdef"[digit] as usize] = value;
        table[b"0123456789ABCDEF"[digit] as usize] = value;
        digit += 1;
    }
    table
};

/// Where a decoded id is in an id buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdRange {
    start: u32,
    len: u8,
}

impl IdRange {
    /// The id's bytes in `ids`, empty if out of range.
    pub(crate) fn get(self, ids: &[u8]) -> &[u8] {
        let start = self.start as usize;
        ids.get(start..start + usize::from(self.len)).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(text: &str) -> bool {
        let mut scanner = Scanner::new(text);
        scanner.skip().and_then(|()| scanner.end()).is_ok()
    }

    #[test]
    fn checks_the_grammar() {
        for good in [
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\u00e9\n"],"b":{}}"#,
            " [ ] ",
            r#""é""#,
            "-0.0E-1",
        ] {
            assert!(skips(good), "{good}");
        }
        for bad in [
            r#"{"a":1,}"#,
            "[1 2]",
            "01",
            "1.",
            "-",
            r#""\x""#,
            "\"a\u{1}\"",
            "tru",
            "{\"a\" 1}",
            "[1]x",
            "",
            r#""\u12g4""#,
        ] {
            assert!(!skips(bad), "{bad:?}");
        }
    }

    #[test]
    fn reads_numbers_in_both_forms() {
        let read = |text: &str| Scanner::new(text).i64();
        assert_eq!(read("-42"), Ok(Some(-42)));
        assert_eq!(read(r#""9223372036854775807""#), Ok(Some(i64::MAX)));
        assert_eq!(read(r#""-9223372036854775808""#), Ok(Some(i64::MIN)));
        assert_eq!(read("null"), Ok(None));
        assert_eq!(read("1.5"), Err(Unreadable));
        assert_eq!(read(r#""+1""#), Err(Unreadable));
        assert_eq!(read("9223372036854775808"), Err(Unreadable));
        assert_eq!(
            Scanner::new("18446744073709551615").u64(),
            Ok(Some(u64::MAX))
        );
        assert_eq!(Scanner::new("-1").u64(), Err(Unreadable));
        assert_eq!(Scanner::new("4294967296").u32(), Err(Unreadable));
        let double = |text: &str| Scanner::new(text).f64();
        assert_eq!(double("0.019511"), Ok(Some(0.019511)));
        assert_eq!(double(r#""2.5""#), Ok(Some(2.5)));
        assert_eq!(double(r#""-Infinity""#), Ok(Some(f64::NEG_INFINITY)));
        assert!(double(r#""NaN""#).expect("reads").expect("some").is_nan());
        assert_eq!(double(r#""2.5x""#), Err(Unreadable));
        let kind = |text: &str| {
            Scanner::new(text).enumeration(|name| (name == "SPAN_KIND_SERVER").then_some(2))
        };
        assert_eq!(kind(r#""SPAN_KIND_SERVER""#), Ok(Some(2)));
        assert_eq!(kind(r#""3""#), Ok(Some(3)));
        assert_eq!(kind(r#""SERVER""#), Err(Unreadable));
    }

    #[test]
    fn plain_runs_stop_at_the_first_special_byte() {
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|byte| matches!(byte, b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(bytes.len())
        };
        // Every special byte at every position of a 19-byte run of ordinary
        // bytes, including multi-byte UTF-8 and bytes just above 0x20.
        let fillers: [&[u8]; 3] = [
            b"abcdefghijklmnopqrs",
            "é€abcdefghijklm".as_bytes(),
            &[0x21; 19],
        ];
        for filler in fillers {
            for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                for at in 0..=filler.len() {
                    let mut bytes = filler.to_vec();
                    if at < bytes.len() {
                        bytes[at] = special;
                    }
                    let expected = naive(&bytes);
                    // The run ends at the special byte or, past the last
                    // whole word, where the caller takes over byte by byte.
                    let run = plain_run(&bytes);
                    assert!(run <= expected, "{bytes:?}");
                    assert!(run == expected || bytes.len() - run < 8, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn compact_string_values_in_one_step_and_the_rest_left_alone() {
        let long = "x".repeat(37);
        for text in [
            "",
            "a",
            "currency",
            "é€ and more than eight bytes",
            long.as_str(),
        ] {
            let json = format!(r#"{{"stringValue":"{text}"}},1"#);
            let mut scanner = Scanner::new(&json);
            assert_eq!(scanner.compact_string_value(), Some(text));
            assert_eq!(scanner.peek(), Ok(b','), "{json}");
        }
        for json in [
            r#"{"stringValue":"a\"b"}"#,
            r#"{"stringValue":"line\nbreak and more"}"#,
            r#"{ "stringValue":"spaced"}"#,
            r#"{"stringValue":"a" }"#,
            r#"{"stringValue":"a","intValue":"1"}"#,
            r#"{"intValue":"1"}"#,
            r#"{"stringValue":"unterminated"#,
            "{\"stringValue\":\"control\ttab\"}",
            r#"{"stringValue":null}"#,
        ] {
            let mut scanner = Scanner::new(json);
            assert_eq!(scanner.compact_string_value(), None, "{json}");
            assert_eq!(scanner.at, 0, "{json}");
        }
        // Skipping takes the same step, and the general path when it fails.
        let mut scanner =
            Scanner::new(r#"[{"stringValue":"a"},{"stringValue":"b\u0041"},{"intValue":2}]"#);
        assert_eq!(scanner.skip(), Ok(()));
        assert_eq!(scanner.end(), Ok(()));
    }

    #[test]
    fn compact_keys_in_one_step_and_the_rest_left_alone() {
        let mut scanner = Scanner::new(r#"{"key":"http.route","value":{"intValue":"3"}}"#);
        assert_eq!(scanner.compact_key(), Some("http.route"));
        assert_eq!(scanner.skip(), Ok(()));
        assert_eq!(scanner.close_object(|_, _| Err(Unreadable)), Ok(()));
        assert_eq!(scanner.end(), Ok(()));
        // Members after the value go to the closure, in order.
        let mut scanner =
            Scanner::new(r#"{"key":"k","value":{"stringValue":"v"},"keyStrindex":2, "x":[1]}"#);
        assert_eq!(scanner.compact_key(), Some("k"));
        assert_eq!(scanner.compact_string_value(), Some("v"));
        let mut seen = Vec::new();
        let rest = scanner.close_object(|scanner, member| {
            seen.push(member);
            scanner.skip()
        });
        assert_eq!(rest, Ok(()));
        assert_eq!(seen, ["keyStrindex", "x"]);
        assert_eq!(scanner.end(), Ok(()));
        for json in [
            r#"{"value":{"stringValue":"v"},"key":"k"}"#,
            r#"{ "key":"k","value":1}"#,
            r#"{"key":"k", "value":1}"#,
            r#"{"key":"a\u0041","value":1}"#,
            r#"{"key":null,"value":1}"#,
            r#"{"key":"k","valu":1}"#,
            r#"{"key":"unterminated"#,
        ] {
            let mut scanner = Scanner::new(json);
            assert_eq!(scanner.compact_key(), None, "{json}");
            assert_eq!(scanner.at, 0, "{json}");
        }
    }

    #[test]
    fn same_bytes_compares_every_byte_at_every_length() {
        for n in 0..=30 {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same_bytes(&a, &[a.as_slice(), b"x"].concat()));
        }
    }

    proptest::proptest! {
        /// Integers read eight digits at a time are what `str::parse`
        /// reads, and anything but digits is refused, at every length.
        #[test]
        fn integers_read_as_parse_reads_them(
            number in proptest::prelude::any::<u64>(),
            digits in 1usize..=20,
            noise in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let text = number.to_string();
            let text = &text[text.len().saturating_sub(digits)..];
            let expected: u64 = text.parse().expect("digits");
            let json = format!("\"{text}\"");
            proptest::prop_assert_eq!(Scanner::new(&json).u64(), Ok(Some(expected)));
            // As a JSON number, without the leading zeros JSON forbids.
            let bare = expected.to_string();
            proptest::prop_assert_eq!(Scanner::new(&bare).u64(), Ok(Some(expected)));
            let (at, byte) = noise;
            let mut bad = text.as_bytes().to_vec();
            let at = at % bad.len();
            if !byte.is_ascii_digit() && byte.is_ascii() && byte != b'"' && byte != b'\\' && byte >= 0x20 {
                bad[at] = byte;
                let json = format!("\"{}\"", String::from_utf8(bad).expect("ascii"));
                proptest::prop_assert!(Scanner::new(&json).u64().is_err(), "{}", json);
            }
        }
    }

    #[test]
    fn integers_at_the_edges() {
        assert_eq!(
            Scanner::new(r#""18446744073709551615""#).u64(),
            Ok(Some(u64::MAX))
        );
        assert!(Scanner::new(r#""18446744073709551616""#).u64().is_err());
        assert_eq!(
            Scanner::new(r#""9999999999999999999""#).u64(),
            Ok(Some(9_999_999_999_999_999_999))
        );
        assert_eq!(Scanner::new(r#""-12345678""#).i64(), Ok(Some(-12_345_678)));
        assert!(Scanner::new(r#""1234567:""#).u64().is_err());
        assert!(Scanner::new(r#""12345/78""#).u64().is_err());
    }

    #[test]
    fn strings_with_escapes_are_left_to_the_general_path() {
        assert_eq!(Scanner::new(r#""plain""#).str(), Ok(Some("plain")));
        assert_eq!(Scanner::new(r#""a\"b""#).str(), Err(Unreadable));
        assert_eq!(Scanner::new("null").str(), Ok(None));
        let mut ids = Vec::new();
        let id = Scanner::new(r#""0A0b""#).hex_id(&mut ids).expect("hex");
        assert_eq!(id.get(&ids), &[0x0a, 0x0b]);
        assert!(Scanner::new(r#""0A0""#).hex_id(&mut ids).is_err());
        assert!(Scanner::new(r#""zz""#).hex_id(&mut ids).is_err());
    }
}
