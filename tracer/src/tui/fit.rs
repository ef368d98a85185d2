//! Lines that fit their width without cutting words: whole items are dropped by priority, or
//! a line is ended at a word boundary with `…`.

use ratatui::text::{Line, Span};

fn width(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.content.chars().count()).sum()
}

/// Items in priority order (most important first): each is kept whole if it still fits,
/// else left out, so a narrow terminal loses the least important facts, never half a word.
pub fn items(items: Vec<Vec<Span<'static>>>, max: usize) -> Line<'static> {
    let mut out: Vec<Span> = vec![];
    let mut used = 0;
    for item in items {
        let w = width(&item);
        if used + w <= max {
            used += w;
            out.extend(item);
        }
    }
    Line::from(out)
}

/// End the line at the last word that fits and mark the cut with `…`.
pub fn words(line: Line<'static>, max: usize) -> Line<'static> {
    if width(&line.spans) <= max {
        return line;
    }
    let mut out: Vec<Span> = vec![];
    let mut used = 0;
    for span in line.spans {
        let w = span.content.chars().count();
        if used + w < max {
            used += w;
            out.push(span);
            continue;
        }
        // Room for part of this span and the ellipsis: cut at a space.
        let room = max.saturating_sub(used + 1);
        let text: String = span.content.chars().take(room).collect();
        let cut = match text.rfind(' ') {
            Some(i) if span.content.chars().nth(room) != Some(' ') => &text[..i],
            _ => &text[..],
        };
        out.push(Span::styled(format!("{}…", cut.trim_end()), span.style));
        break;
    }
    Line::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &Line) -> String {
        l.spans.iter().map(|s| s.content.to_string()).collect()
    }

    #[test]
    fn whole_items_by_priority() {
        let l = items(
            vec![
                vec![Span::raw("tracer")],
                vec![Span::raw(" · kernel 6.18.44-fc-v66")],
                vec![Span::raw(" · edge-7")],
            ],
            20,
        );
        assert_eq!(text(&l), "tracer · edge-7");
    }

    #[test]
    fn cut_at_a_word_with_an_ellipsis() {
        let l = words(
            Line::from(vec![
                Span::raw("old "),
                Span::raw("no estimate: the open connections do not decay"),
            ]),
            24,
        );
        assert_eq!(text(&l), "old no estimate: the…");
        assert!(text(&l).chars().count() <= 24);
        let short = words(Line::raw("fits"), 10);
        assert_eq!(text(&short), "fits");
    }
}
