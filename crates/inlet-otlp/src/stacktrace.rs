//! `exception.stacktrace` (free text, in the language's own format) →
//! frames, innermost first. Lines that are not frames are skipped; a trace
//! in no known format gives no frames (the error is still stored).
//!
//! | language | frame line                                  | order        |
//! |----------|---------------------------------------------|--------------|
//! | Python   | `File "app/x.py", line 12, in total`        | outermost first (reversed) |
//! | Java, .NET | `at com.shop.Order.total(Order.java:12)`  | innermost first |
//! | JavaScript | `at total (/app/order.js:12:5)`, `at /app/order.js:12:5` | innermost first |
//! | Ruby     | `app/order.rb:12:in 'total'`                | innermost first |
//! | Go       | `main.total(...)` then `\t/app/order.go:12 +0x1d` | innermost first |

use inlet_domain::WireFrame;

/// The frames of a stack trace, innermost first, at most `max_frames`,
/// every field at most `max_len` characters.
pub fn parse(trace: &str, max_frames: usize, max_len: usize) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    let mut python = false;
    let mut go_function: Option<&str> = None;
    for line in trace.lines() {
        let t = line.trim();
        if t.starts_with("Traceback (most recent call last)") {
            python = true;
            continue;
        }
        let frame = if let Some(rest) = t.strip_prefix("File \"") {
            python = true;
            python_frame(rest)
        } else if let Some(rest) = t.strip_prefix("at ") {
            java_or_js_frame(rest)
        } else if let Some(f) = go_function.take().filter(|_| line.starts_with('\t')) {
            go_frame(t, f)
        } else if t.ends_with(')') && t.contains('(') && !t.contains(' ') {
            go_function = t.rsplit_once('(').map(|(f, _)| f);
            None
        } else {
            ruby_frame(t)
        };
        if let Some(f) = frame {
            frames.push(f);
        }
    }
    if python {
        frames.reverse();
    }
    frames.truncate(max_frames);
    for f in &mut frames {
        f.file = crate::fit::fit(&f.file, max_len);
        if let Some(func) = &mut f.function {
            *func = crate::fit::fit(func, max_len);
        }
    }
    frames.retain(|f| !f.file.is_empty());
    frames
}

fn frame(file: &str, line: Option<u32>, function: Option<&str>) -> Option<WireFrame> {
    let file = file.trim();
    (!file.is_empty()).then(|| WireFrame {
        file: file.to_owned(),
        line,
        function: function
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned),
        in_app: None,
    })
}

/// `app/x.py", line 12, in total`
fn python_frame(rest: &str) -> Option<WireFrame> {
    let (file, rest) = rest.split_once('"')?;
    let mut line = None;
    let mut function = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(n) = part.strip_prefix("line ") {
            line = n.trim().parse().ok();
        } else if let Some(f) = part.strip_prefix("in ") {
            function = Some(f);
        }
    }
    frame(file, line, function)
}

/// `com.shop.Order.total(Order.java:12)`, `total (/app/order.js:12:5)`,
/// `/app/order.js:12:5`, `async total (file:///app/x.mjs:3:1)`.
fn java_or_js_frame(rest: &str) -> Option<WireFrame> {
    let rest = rest.trim();
    let (function, location) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once('(')) {
        Some((f, loc)) => (Some(f.trim()), loc),
        None => (None, rest),
    };
    // file:line[:column]; Java's "Native Method" / "Unknown Source" have
    // no line; a file may hold ':' itself (`file:///…`, `C:\…`).
    let number = |s: &str| s.parse::<u32>().ok();
    let (file, line) = match location.rsplit_once(':') {
        Some((head, last)) if number(last).is_some() => match head.rsplit_once(':') {
            Some((file, line)) if number(line).is_some() => (file, number(line)),
            _ => (head, number(last)),
        },
        _ => (location, None),
    };
    frame(file, line, function)
}

/// `app/order.rb:12:in 'total'` (also with a backtick).
fn ruby_frame(t: &str) -> Option<WireFrame> {
    let (location, function) = t.split_once(":in ")?;
    let (file, line) = location.rsplit_once(':')?;
    let function = function.trim_matches(|c| matches!(c, '\'' | '`' | '"'));
    frame(file, line.parse().ok(), Some(function))
}

/// `/app/order.go:12 +0x1d` after the function line.
fn go_frame(t: &str, function: &str) -> Option<WireFrame> {
    let location = t.split(' ').next()?;
    let (file, line) = location.rsplit_once(':')?;
    frame(file, line.parse().ok(), Some(function))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(frames: &[WireFrame]) -> Vec<(String, Option<u32>, Option<String>)> {
        frames
            .iter()
            .map(|f| (f.file.clone(), f.line, f.function.clone()))
            .collect()
    }

    fn f(file: &str, line: u32, function: &str) -> (String, Option<u32>, Option<String>) {
        (file.into(), Some(line), Some(function.into()))
    }

    #[test]
    fn python_traces_are_reversed() {
        let t = "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 10, in handle\n    total()\n  File \"/srv/app/order.py\", line 3, in total\n    1/0\nZeroDivisionError: division by zero\n";
        assert_eq!(
            brief(&parse(t, 128, 255)),
            [
                f("/srv/app/order.py", 3, "total"),
                f("/srv/app/main.py", 10, "handle")
            ]
        );
    }

    #[test]
    fn java_and_javascript_frames() {
        let t = "java.lang.IllegalStateException: boom\n\tat com.shop.Order.total(Order.java:12)\n\tat com.shop.Api.handle(Api.java:40)\n\tat java.base/jdk.internal.Native.call(Native Method)\n";
        let frames = parse(t, 128, 255);
        assert_eq!(frames[0].function.as_deref(), Some("com.shop.Order.total"));
        assert_eq!(
            (frames[0].file.as_str(), frames[0].line),
            ("Order.java", Some(12))
        );
        assert_eq!(frames[2].line, None);
        let t = "TypeError: x is undefined\n    at total (/app/order.js:12:5)\n    at /app/server.js:40:9\n    at async handle (file:///app/h.mjs:3:1)";
        assert_eq!(
            brief(&parse(t, 128, 255)),
            [
                f("/app/order.js", 12, "total"),
                ("/app/server.js".into(), Some(40), None),
                f("file:///app/h.mjs", 3, "async handle"),
            ]
        );
    }

    #[test]
    fn ruby_and_go_frames() {
        let t = "app/models/order.rb:12:in 'total'\napp/controllers/orders.rb:5:in `index'";
        assert_eq!(
            brief(&parse(t, 128, 255)),
            [
                f("app/models/order.rb", 12, "total"),
                f("app/controllers/orders.rb", 5, "index")
            ]
        );
        let t = "goroutine 1 [running]:\nmain.total(...)\n\t/app/order.go:12 +0x1d\nmain.main()\n\t/app/main.go:7 +0x25\n";
        assert_eq!(
            brief(&parse(t, 128, 255)),
            [
                f("/app/order.go", 12, "main.total"),
                f("/app/main.go", 7, "main.main")
            ]
        );
    }

    #[test]
    fn limits_and_garbage() {
        let t = "at a (x.js:1:1)\n".repeat(10);
        assert_eq!(parse(&t, 3, 255).len(), 3);
        assert!(parse("just a message", 128, 255).is_empty());
        assert!(parse("", 128, 255).is_empty());
        assert!(parse(":in \nat \n\tat ()\nFile \"", 128, 255).is_empty());
        let long = format!("File \"{}\", line 1, in f", "y".repeat(400));
        assert_eq!(parse(&long, 128, 255)[0].file.chars().count(), 255);
    }
}
