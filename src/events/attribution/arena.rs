//! The arenas of a tenant's sessions: their texts and their contacts, appended in recording order
//! in chunks, let go from the front as sessions leave.

use std::collections::VecDeque;

/// Where a session's texts or contacts are in its tenant's arena.
#[derive(Clone, Copy)]
pub(super) struct Place {
    pub(super) chunk: u64,
    pub(super) start: u32,
    pub(super) len: u32,
}

/// The texts or the contacts of a tenant's sessions, in recording order, in chunks: a session's
/// are in one chunk, and a chunk goes once the sessions in it have left (oldest first). No
/// allocation per session: recording appends, leaving moves the front; a chunk let go is kept
/// for the next one needed.
pub(super) struct Arena<T> {
    pub(super) chunks: VecDeque<Vec<T>>,
    /// The number of `chunks[0]`.
    pub(super) base: u64,
    pub(super) chunk_len: usize,
    pub(super) spare: Option<Vec<T>>,
}

impl<T: Copy> Arena<T> {
    pub(super) fn new(chunk_len: usize) -> Self {
        Arena { chunks: VecDeque::new(), base: 0, chunk_len, spare: None }
    }

    /// The chunk `n` items go into (made when the last has no room), and its number.
    pub(super) fn room(&mut self, n: usize) -> (&mut Vec<T>, u64) {
        if self.chunks.back().is_none_or(|c| c.capacity() - c.len() < n) {
            let chunk = match self.spare.take() {
                Some(spare) if spare.capacity() >= n => spare,
                _ => Vec::with_capacity(self.chunk_len.max(n)),
            };
            self.chunks.push_back(chunk);
        }
        let number = self.base + self.chunks.len() as u64 - 1;
        let len = self.chunks.len();
        (&mut self.chunks[len - 1], number)
    }

    pub(super) fn push(&mut self, items: &[T]) -> Place {
        let (chunk, number) = self.room(items.len());
        let start = offset(chunk.len());
        chunk.extend_from_slice(items);
        Place { chunk: number, start, len: offset(items.len()) }
    }

    pub(super) fn index(&self, p: Place) -> Option<(usize, std::ops::Range<usize>)> {
        let chunk = usize::try_from(p.chunk.checked_sub(self.base)?).ok()?;
        let start = p.start as usize;
        Some((chunk, start..start + p.len as usize))
    }

    pub(super) fn get(&self, p: Place) -> &[T] {
        self.index(p).and_then(|(c, range)| self.chunks.get(c)?.get(range)).unwrap_or_default()
    }

    pub(super) fn get_mut(&mut self, p: Place) -> &mut [T] {
        match self.index(p) {
            Some((c, range)) => self.chunks.get_mut(c).and_then(|c| c.get_mut(range)).unwrap_or_default(),
            None => &mut [],
        }
    }

    /// Lets go of the chunks before `chunk`: no session in them is left.
    pub(super) fn release_before(&mut self, chunk: u64) {
        while self.base < chunk {
            let Some(mut gone) = self.chunks.pop_front() else { break };
            self.base += 1;
            if gone.capacity() == self.chunk_len {
                gone.clear();
                self.spare = Some(gone);
            }
        }
    }
}

/// Texts a session's contacts go in per chunk (bytes), and contacts.
pub(super) const TEXT_CHUNK: usize = 64 * 1024;
pub(super) const CONTACT_CHUNK: usize = 2 * 1024;

/// A place in a session's text (records are far below 4 GiB).
pub(super) fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
