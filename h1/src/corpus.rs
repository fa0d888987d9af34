//! The adversarial answer corpus (`h1/corpus/answers.txt`): the published
//! request-smuggling and response-splitting cases against hyper, pingora and
//! HAProxy, each with what hyper's client does with it. The framer's tests
//! and the proxy's differential test both read it from here.

/// What hyper's client does with a case's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// hyper refuses it (a head or body error).
    Refuse,
    /// hyper delivers exactly this body.
    Body(Vec<u8>),
    /// hyper reads the body until the backend closes.
    CloseDelimited,
}

/// One case of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub expect: Expect,
    /// Asked with HEAD (the corpus's `method: HEAD`).
    pub head: bool,
    /// A case about a request (`direction: request`), not an answer.
    pub request: bool,
    /// The bytes the backend (or client, for a request case) sends.
    pub wire: Vec<u8>,
}

const CORPUS: &str = include_str!("../corpus/answers.txt");

/// Every case of the corpus, in its order.
///
/// # Panics
///
/// When the corpus file is malformed (a case without a name, an expectation
/// or bytes, or an unknown escape): it is checked in with the code.
pub fn cases() -> Vec<Case> {
    CORPUS
        .split("\n\n")
        .filter(|block| block.contains("# name:"))
        .map(|block| {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("# {key}: ")))
            };
            let name = field("name").expect("every case has a name").to_string();
            let expect = match field("expect").expect("every case has an expect line") {
                "refuse" => Expect::Refuse,
                "close-delimited" => Expect::CloseDelimited,
                body => Expect::Body(unescape(
                    body.strip_prefix("body=")
                        .expect("expect is refuse, close-delimited or body="),
                )),
            };
            let wire = block
                .lines()
                .find(|line| !line.starts_with('#'))
                .expect("every case has its bytes");
            Case {
                name,
                expect,
                head: field("method") == Some("HEAD"),
                request: field("direction") == Some("request"),
                wire: unescape(wire),
            }
        })
        .collect()
}

/// `\r`, `\n`, `\t`, `\\` and `\xHH` as the corpus writes bytes.
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' || at + 1 == bytes.len() {
            out.push(bytes[at]);
            at += 1;
            continue;
        }
        match bytes[at + 1] {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = std::str::from_utf8(&bytes[at + 2..at + 4]).expect("\\xHH is ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("\\xHH is hexadecimal"));
                at += 2;
            }
            other => panic!("unknown escape \\{} in the corpus", other as char),
        }
        at += 2;
    }
    out
}
