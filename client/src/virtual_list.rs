//! The virtual list window: which rows to materialise for a scroll offset and a
//! viewport, plus overscan, the load-more threshold and keyboard targets. The number of
//! rows is O(visible + overscan) whatever the list length.

use std::ops::Range;

/// The list's shape; the defaults are in `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListGeometry {
    /// Height of one row, px (default 60; 0 is read as 1).
    pub item_px: u32,
    /// Height of the visible area, px (default 600).
    pub viewport_px: u32,
    /// Rows rendered beyond each edge (seed: 5).
    pub overscan: u32,
    /// Ask for more when the window ends within this many rows of the end (seed: 80% of
    /// the list scrolled maps to a row threshold).
    pub load_more_rows: u32,
}

impl Default for ListGeometry {
    fn default() -> Self {
        ListGeometry {
            item_px: 60,
            viewport_px: 600,
            overscan: 5,
            load_more_rows: 10,
        }
    }
}

/// Which rows to render for one scroll position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Rows to materialise.
    pub rows: Range<u64>,
    /// Rows actually visible.
    pub visible: Range<u64>,
    /// The offset of the first materialised row, in px.
    pub offset_px: u64,
    /// The whole list's height, px (the scroll area).
    pub total_px: u64,
    /// The window is within `load_more_rows` of the end: fetch the next page.
    pub load_more: bool,
}

impl Window {
    /// How many rows to render.
    pub fn materialised(&self) -> u64 {
        self.rows.end - self.rows.start
    }
}

/// The window for a list of `count` rows scrolled to `scroll_px` (clamped to the end).
pub fn window(g: &ListGeometry, count: u64, scroll_px: u64) -> Window {
    let item = u64::from(g.item_px.max(1));
    let total_px = count * item;
    let scroll = scroll_px.min(total_px.saturating_sub(u64::from(g.viewport_px)));
    let first = (scroll / item).min(count);
    let last = (scroll + u64::from(g.viewport_px))
        .div_ceil(item)
        .min(count);
    let start = first.saturating_sub(u64::from(g.overscan));
    let end = (last + u64::from(g.overscan)).min(count);
    Window {
        rows: start..end,
        visible: first..last,
        offset_px: start * item,
        total_px,
        load_more: count.saturating_sub(last) <= u64::from(g.load_more_rows),
    }
}

/// A navigation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// One row up.
    Up,
    /// One row down.
    Down,
    /// The first row.
    Home,
    /// The last row.
    End,
    /// One viewport up.
    PageUp,
    /// One viewport down.
    PageDown,
}

/// The row the focus moves to, and the scroll offset that keeps it visible.
pub fn navigate(
    g: &ListGeometry,
    count: u64,
    focused: u64,
    scroll_px: u64,
    key: Key,
) -> (u64, u64) {
    if count == 0 {
        return (0, 0);
    }
    let page = u64::from(g.viewport_px / g.item_px.max(1)).max(1);
    let last = count - 1;
    let target = match key {
        Key::Up => focused.saturating_sub(1),
        Key::Down => (focused + 1).min(last),
        Key::Home => 0,
        Key::End => last,
        Key::PageUp => focused.saturating_sub(page),
        Key::PageDown => (focused + page).min(last),
    };
    let item = u64::from(g.item_px.max(1));
    let top = target * item;
    let bottom = top + item;
    let scroll = if top < scroll_px {
        top
    } else if bottom > scroll_px + u64::from(g.viewport_px) {
        bottom - u64::from(g.viewport_px)
    } else {
        scroll_px
    };
    (target, scroll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materialises_visible_plus_overscan_whatever_the_length() {
        let g = ListGeometry::default(); // 10 visible rows, overscan 5
        for count in [1_000u64, 1_000_000, 100_000_000] {
            let w = window(&g, count, 500 * 60);
            assert_eq!(w.visible, 500..510);
            assert_eq!(w.rows, 495..515);
            assert_eq!(w.materialised(), 20, "≤ visible + 2·overscan for {count}");
            assert!(!w.load_more);
        }
    }

    #[test]
    fn clamps_at_the_edges_and_asks_for_more_near_the_end() {
        let g = ListGeometry::default();
        let w = window(&g, 100, 0);
        assert_eq!(w.rows, 0..15);
        let w = window(&g, 100, u64::MAX);
        assert_eq!(
            (w.visible.clone(), w.rows.clone(), w.load_more),
            (90..100, 85..100, true)
        );
        assert_eq!(window(&g, 0, 10).materialised(), 0);
        assert_eq!(window(&g, 3, 0).rows, 0..3);
    }

    #[test]
    fn keyboard_moves_focus_and_keeps_it_in_view() {
        let g = ListGeometry::default();
        assert_eq!(navigate(&g, 100, 9, 0, Key::Down), (10, 60));
        assert_eq!(navigate(&g, 100, 10, 60, Key::Up), (9, 60));
        assert_eq!(navigate(&g, 100, 50, 3000, Key::Home), (0, 0));
        assert_eq!(navigate(&g, 100, 0, 0, Key::End), (99, 5400));
        assert_eq!(navigate(&g, 100, 0, 0, Key::PageDown), (10, 60));
        assert_eq!(navigate(&g, 0, 0, 0, Key::Down), (0, 0));
    }
}
