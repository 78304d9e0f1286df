//! Where a failing span's exception was raised, read from the stack trace
//! SDKs record with it (`exception.stacktrace`): the innermost frame of the
//! service's own code, skipping the runtime's and libraries' frames.
//! Python, Java (and other JVM languages), Node.js, .NET and Go traces are
//! read; anything else gives nothing. Only the first `MAX_SCAN_BYTES` of a
//! trace are read.

/// Bytes of a trace read at most.
const MAX_SCAN_BYTES: usize = 16 * 1024;

/// One frame: the function, the file and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub function: Option<&'a str>,
    pub file: String,
    pub line: Option<u32>,
}

/// The frame of the service's own code nearest to the raise.
pub(crate) fn raising_frame(trace: &str) -> Option<Frame<'_>> {
    let trace = crate::text::truncate(trace, MAX_SCAN_BYTES);
    if trace.contains("Traceback (most recent call last)") || trace.trim_start().starts_with("File \"") {
        // Python: innermost frame last.
        return trace.lines().filter_map(python_frame).rfind(|f| !library(&f.file));
    }
    if trace.contains("goroutine ") {
        return go_frames(trace).find(|f| !library(&f.file));
    }
    // Java, Node.js and .NET: innermost frame first, each line `at …`.
    trace
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("at "))
        .filter_map(|frame| dotnet_frame(frame).or_else(|| jvm_frame(frame)).or_else(|| node_frame(frame)))
        .find(|f| !library(&f.file) && !f.function.is_some_and(jvm_library))
}

/// `  File "/app/shop/pay.py", line 88, in charge_card`
fn python_frame(line: &str) -> Option<Frame<'_>> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (file, rest) = rest.split_once('"')?;
    let rest = rest.trim_start_matches(',').trim_start();
    let rest = rest.strip_prefix("line ")?;
    let (number, function) = rest.split_once(", in ").unwrap_or((rest, ""));
    Some(Frame {
        function: Some(function.trim()).filter(|f| !f.is_empty() && !f.starts_with('<')),
        file: file.to_owned(),
        line: number.trim().parse().ok(),
    })
}

/// `com.shop.Pay.charge(Pay.java:88)`: the file is put in its package's
/// directory (`com/shop/Pay.java`), as source trees lay it out.
fn jvm_frame(frame: &str) -> Option<Frame<'_>> {
    let (function, location) = frame.trim_end().strip_suffix(')')?.split_once('(')?;
    let (file, line) = location.rsplit_once(':').map_or((location, None), |(f, l)| (f, l.parse().ok()));
    if !file.contains('.') || file.contains('/') || file.contains(' ') {
        return None;
    }
    // `app//com.shop.Pay.charge` (a class loader name) and module prefixes.
    let function = function.rsplit('/').next().unwrap_or(function);
    let package: Vec<&str> = function.split('.').collect();
    let directory = package.len().checked_sub(2).map(|n| package[..n].join("/"));
    let file = match directory {
        Some(directory) if !directory.is_empty() => format!("{directory}/{file}"),
        _ => file.to_owned(),
    };
    Some(Frame {
        function: Some(function),
        file,
        line,
    })
}

/// `charge (/app/src/pay.js:88:13)`, `async charge (file:///app/src/pay.js:88:13)`
/// or `/app/src/pay.js:88:13`.
fn node_frame(frame: &str) -> Option<Frame<'_>> {
    let frame = frame.trim_end();
    let (function, location) = match frame.strip_suffix(')').and_then(|f| f.rsplit_once(" (")) {
        Some((function, location)) => (Some(function.trim_start_matches("async ").trim()), location),
        None => (None, frame),
    };
    let location = location.strip_prefix("file://").unwrap_or(location);
    let (rest, _column) = location.rsplit_once(':')?;
    let (file, line) = rest.rsplit_once(':')?;
    if !file.contains('/') && !file.contains('\\') {
        return None;
    }
    Some(Frame {
        function: function.filter(|f| !f.is_empty() && *f != "<anonymous>"),
        file: file.to_owned(),
        line: line.parse().ok(),
    })
}

/// `Shop.Pay.Charge(Card card) in /app/Pay.cs:line 88`
fn dotnet_frame(frame: &str) -> Option<Frame<'_>> {
    let (function, location) = frame.split_once(" in ")?;
    let (file, line) = location.rsplit_once(":line ")?;
    let function = function.split_once('(').map_or(function, |(f, _)| f).trim();
    Some(Frame {
        function: Some(function).filter(|f| !f.is_empty()),
        file: file.trim().to_owned(),
        line: line.trim().parse().ok(),
    })
}

/// `main.charge(...)` followed by `\t/app/pay.go:88 +0x1d`.
fn go_frames(trace: &str) -> impl Iterator<Item = Frame<'_>> {
    let lines: Vec<&str> = trace.lines().collect();
    let mut frames = Vec::new();
    for pair in lines.windows(2) {
        let (call, location) = (pair[0], pair[1]);
        let Some(location) = location.strip_prefix('\t') else { continue };
        let location = location.split(" +0x").next().unwrap_or(location);
        let Some((file, line)) = location.rsplit_once(':') else { continue };
        if !file.ends_with(".go") {
            continue;
        }
        let function = call.rsplit_once('(').map_or(call, |(f, _)| f).trim();
        frames.push(Frame {
            function: Some(function).filter(|f| !f.is_empty()),
            file: file.to_owned(),
            line: line.trim().parse().ok(),
        });
    }
    frames.into_iter()
}

/// Frames of installed packages and of the runtime.
fn library(file: &str) -> bool {
    const MARKERS: &[&str] = &[
        "site-packages/",
        "dist-packages/",
        "/lib/python",
        "<frozen",
        "node_modules/",
        "node:",
        "internal/",
        "/usr/local/go/",
        "/go/pkg/mod/",
        "/runtime/",
    ];
    MARKERS.iter().any(|m| file.contains(m))
}

/// JVM frames of the platform and the common frameworks.
fn jvm_library(function: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "java.", "javax.", "jdk.", "sun.", "com.sun.", "kotlin.", "kotlinx.", "scala.", "org.springframework.",
        "io.netty.", "org.apache.", "io.opentelemetry.", "System.", "Microsoft.",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(trace: &str) -> Option<(Option<&str>, String, Option<u32>)> {
        raising_frame(trace).map(|f| (f.function, f.file, f.line))
    }

    #[test]
    fn python_the_innermost_frame_of_the_service() {
        let trace = "Traceback (most recent call last):\n  File \"/app/shop/api.py\", line 12, in checkout\n    pay.charge_card(card)\n  File \"/app/shop/pay.py\", line 88, in charge_card\n    requests.post(URL)\n  File \"/usr/lib/python3/site-packages/requests/api.py\", line 115, in post\n    return request('post', url)\nrequests.exceptions.HTTPError: 402\n";
        assert_eq!(frame(trace), Some((Some("charge_card"), "/app/shop/pay.py".into(), Some(88))));
    }

    #[test]
    fn jvm_frames_are_put_in_their_package_directory() {
        let trace = "com.shop.CardDeclined: declined\n\tat java.base/java.util.Objects.requireNonNull(Objects.java:233)\n\tat com.shop.pay.Payments.charge(Payments.java:88)\n\tat com.shop.api.Checkout.post(Checkout.java:41)\n";
        assert_eq!(
            frame(trace),
            Some((Some("com.shop.pay.Payments.charge"), "com/shop/pay/Payments.java".into(), Some(88)))
        );
    }

    #[test]
    fn node_skips_node_modules_and_internals() {
        let trace = "Error: declined\n    at Object.request (/app/node_modules/axios/lib/core.js:10:5)\n    at async chargeCard (file:///app/src/pay.js:88:13)\n    at node:internal/process/task_queues:95:5\n";
        assert_eq!(frame(trace), Some((Some("chargeCard"), "/app/src/pay.js".into(), Some(88))));
        let anonymous = "TypeError: x\n    at /app/src/cart.js:7:3\n";
        assert_eq!(frame(anonymous), Some((None, "/app/src/cart.js".into(), Some(7))));
    }

    #[test]
    fn dotnet_and_go() {
        let dotnet = "System.InvalidOperationException: declined\n   at Shop.Pay.Charge(Card card) in /app/Pay.cs:line 88\n   at Shop.Api.Post() in /app/Api.cs:line 12\n";
        assert_eq!(frame(dotnet), Some((Some("Shop.Pay.Charge"), "/app/Pay.cs".into(), Some(88))));
        let go = "goroutine 7 [running]:\nruntime/debug.Stack()\n\t/usr/local/go/src/runtime/debug/stack.go:24 +0x5e\nmain.chargeCard(...)\n\t/app/pay.go:88 +0x1d\nmain.main()\n\t/app/main.go:12 +0x25\n";
        assert_eq!(frame(go), Some((Some("main.chargeCard"), "/app/pay.go".into(), Some(88))));
    }

    #[test]
    fn anything_else_gives_nothing() {
        assert_eq!(frame("declined"), None);
        assert_eq!(frame(""), None);
        assert_eq!(frame(&"at x\n".repeat(100_000)), None, "bounded, and no frame");
    }
}
