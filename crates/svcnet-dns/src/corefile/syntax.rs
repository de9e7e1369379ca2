//! The Corefile's syntax (Caddy's configuration format): tokens, lines, `{ }` blocks, quotes and `#`
//! comments into server blocks and directives, with CoreDNS's error form. Written by hand: no maintained
//! Rust crate parses it, and the grammar is small.

/// A Corefile that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line} - Error during parsing: {message}")]
pub struct CorefileError {
    /// The file's name, as CoreDNS prints it (`Corefile`).
    pub file: String,
    /// The line the problem is on (1-based; 0 for the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One directive: `name args…` on one line, with an optional `{ … }` block of sub-directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive's name.
    pub name: String,
    /// Its arguments on the same line.
    pub args: Vec<String>,
    /// Its line.
    pub line: usize,
    /// The lines of its block.
    pub block: Vec<Directive>,
}

/// A server block: `keys { directives }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlock {
    /// Its keys (`.:53`, `dns://.:5353`).
    pub keys: Vec<String>,
    /// The key line.
    pub line: usize,
    /// Its directives.
    pub directives: Vec<Directive>,
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
    /// A quoted token is never a brace.
    quoted: bool,
}

impl Token {
    fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, CorefileError> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') if chars.peek() == Some(&'"') => s.push(chars.next().unwrap_or('"')),
                        Some('\n') => {
                            line += 1;
                            s.push('\n');
                        }
                        Some(c) => s.push(c),
                        None => {
                            return Err(CorefileError {
                                file: file.into(),
                                line: start,
                                message: "unterminated quoted string".into(),
                            });
                        }
                    }
                }
                tokens.push(Token {
                    text: s,
                    line: start,
                    quoted: true,
                });
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n == '"' {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                tokens.push(Token {
                    text: s,
                    line,
                    quoted: false,
                });
            }
        }
    }
    Ok(tokens)
}

/// Parses the syntax of a Corefile (no meaning yet).
pub fn parse(text: &str, file: &str) -> Result<Vec<ServerBlock>, CorefileError> {
    let tokens = tokenize(text, file)?;
    let err = |line, message: String| CorefileError {
        file: file.into(),
        line,
        message,
    };
    if tokens.iter().any(|t| !t.quoted && t.text.contains("{$")) {
        let t = tokens
            .iter()
            .find(|t| t.text.contains("{$"))
            .map(|t| t.line)
            .unwrap_or(0);
        return Err(err(t, "environment variables ({$NAME}) are not supported".into()));
    }
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let line = tokens[i].line;
        let mut keys = Vec::new();
        while i < tokens.len() && !tokens[i].is("{") {
            if tokens[i].is("}") {
                return Err(err(tokens[i].line, "unexpected '}'".into()));
            }
            keys.extend(
                tokens[i]
                    .text
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string),
            );
            i += 1;
        }
        if i == tokens.len() {
            // A file of one server block may leave out its braces, as Caddy allows; svcnet asks for them
            // so that a typo is not read as a key.
            return Err(err(
                line,
                format!("expected '{{' after server block keys {keys:?}"),
            ));
        }
        i += 1; // `{`
        let (directives, next) = parse_directives(&tokens, i, file)?;
        i = next;
        blocks.push(ServerBlock {
            keys,
            line,
            directives,
        });
    }
    Ok(blocks)
}

/// Parses directives from `i` up to the matching `}`; returns them and the index after the brace.
fn parse_directives(
    tokens: &[Token],
    mut i: usize,
    file: &str,
) -> Result<(Vec<Directive>, usize), CorefileError> {
    let mut out = Vec::new();
    loop {
        let Some(t) = tokens.get(i) else {
            let line = tokens.last().map(|t| t.line).unwrap_or(0);
            return Err(CorefileError {
                file: file.into(),
                line,
                message: "unexpected end of file: missing '}'".into(),
            });
        };
        if t.is("}") {
            return Ok((out, i + 1));
        }
        if t.is("{") {
            return Err(CorefileError {
                file: file.into(),
                line: t.line,
                message: "unexpected '{'".into(),
            });
        }
        let line = t.line;
        let name = t.text.clone();
        i += 1;
        let mut args = Vec::new();
        let mut block = Vec::new();
        while let Some(a) = tokens.get(i) {
            if a.line != line || a.is("}") {
                break;
            }
            if a.is("{") {
                let (b, next) = parse_directives(tokens, i + 1, file)?;
                block = b;
                i = next;
                break;
            }
            args.push(a.text.clone());
            i += 1;
        }
        out.push(Directive {
            name,
            args,
            line,
            block,
        });
    }
}
