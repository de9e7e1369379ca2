//! Running `nft` and `conntrack`: a configured command prefix (so tests can say `ip netns exec NS nft`),
//! scripts on stdin, and errors that carry the tool's own message.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::NftError;

/// Runs `prefix args…`, feeding `stdin` if given; returns stdout.
pub(crate) fn run(prefix: &[String], args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let (program, rest) = prefix.split_first().ok_or(NftError::EmptyCommand)?;
    let describe = || {
        let mut v: Vec<&str> = prefix.iter().map(String::as_str).collect();
        v.extend_from_slice(args);
        v.join(" ")
    };
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn {
        command: describe(),
        source,
    })?;
    if let Some(text) = stdin {
        // Written from this thread while the child reads: nft reads the whole script before it answers,
        // so the pipes cannot deadlock.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let res = pipe.write_all(text.as_bytes());
        drop(pipe);
        if let Err(source) = res {
            let _ = child.wait();
            return Err(NftError::Spawn {
                command: describe(),
                source,
            });
        }
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn {
        command: describe(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError::Failed {
            command: describe(),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
