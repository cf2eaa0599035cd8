//! The scorecard as JUnit XML, the report format CI systems (GitHub, GitLab, Jenkins) show
//! natively: one `testcase` per scenario, a failing one with its reasons and the client's log
//! tail. Pure. Written by hand: the format is a dozen elements, and the JUnit crates bring a
//! second date-time library into the binary.

/// One scenario's result as a test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub passed: bool,
    pub seconds: f64,
    pub failures: Vec<String>,
    /// Figures and the log's path, for `system-out`.
    pub output: String,
}

/// Text made safe for XML content and attribute values: markup escaped, and the characters
/// XML 1.0 cannot carry at all (most control characters) dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The whole document for `cases`.
pub fn render(suite: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| !c.passed).count();
    let total: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{suite}\" tests=\"{n}\" failures=\"{failures}\" time=\"{total:.3}\">\n  <testsuite name=\"{suite}\" tests=\"{n}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        suite = escape(suite),
        n = cases.len(),
    );
    for case in cases {
        out.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">\n",
            escape(&case.name),
            escape(suite),
            case.seconds
        ));
        if !case.passed {
            let message = case
                .failures
                .first()
                .map(String::as_str)
                .unwrap_or("failed");
            out.push_str(&format!(
                "      <failure message=\"{}\">{}</failure>\n",
                escape(message),
                escape(&case.failures.join("\n"))
            ));
        }
        if !case.output.is_empty() {
            out.push_str(&format!(
                "      <system-out>{}</system-out>\n",
                escape(&case.output)
            ));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_unusable_characters_dropped() {
        assert_eq!(
            escape("a<b>&\"c\"'d'\u{1b}[31m\tok\n"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;[31m\tok\n"
        );
    }

    #[test]
    fn failing_cases_carry_their_reasons() {
        let cases = [
            Case {
                name: "rotation".into(),
                passed: true,
                seconds: 12.5,
                failures: vec![],
                output: "reload 0.5s".into(),
            },
            Case {
                name: "key-revocation".into(),
                passed: false,
                seconds: 8.0,
                failures: vec!["never used a replacement token".into(), "5 < 6".into()],
                output: String::new(),
            },
        ];
        let xml = render("projected-token conformance", &cases);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"projected-token conformance\" tests=\"2\" failures=\"1\" time=\"20.500\">"), "{xml}");
        assert!(xml.contains("<testcase name=\"rotation\" classname=\"projected-token conformance\" time=\"12.500\">\n      <system-out>reload 0.5s</system-out>\n    </testcase>"), "{xml}");
        assert!(xml.contains("<failure message=\"never used a replacement token\">never used a replacement token\n5 &lt; 6</failure>"), "{xml}");
        assert!(xml.ends_with("  </testsuite>\n</testsuites>\n"));
    }
}
