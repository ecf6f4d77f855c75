//! Text helpers shared by the controller and the webhook.

/// At most `max` bytes (cut on a character boundary, `…` appended): Kubernetes limits the size of
/// condition messages and Event notes.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
