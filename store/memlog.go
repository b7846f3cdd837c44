package store

// memChunk is how many records one array of a memLog holds.
const memChunk = 1024

// memLog is the record sequence of a MemStore group: the record of index
// off+k is at position head+k of the chunks laid end to end. It grows a
// chunk at a time, so a long log is never copied to grow (a slice that
// doubles copies every pointer in it, under the garbage collector's write
// barrier, a twentieth of the CPU of a busy in-memory node).
//
// Copies of a memLog (the live, staged and durable views of a group) share
// chunks. That is safe because a chunk is only ever written past the end
// of every copy that can see it: append writes at the end, and a
// truncation gives the truncated copy a chunk list of its own and a fresh
// copy of its last chunk, so that the appends after it write nowhere
// another copy reads.
type memLog struct {
	off    uint64
	head   int
	n      int
	chunks []*[memChunk]memRec
}

// len is the number of records.
func (l *memLog) len() int { return l.n }

// end is the index after the last record.
func (l *memLog) end() uint64 { return l.off + uint64(l.n) }

// has says whether index is in the log.
func (l *memLog) has(index uint64) bool { return index >= l.off && index < l.end() }

// at returns the record of index, which must be in the log.
func (l *memLog) at(index uint64) *memRec {
	p := l.head + int(index-l.off)
	return &l.chunks[p/memChunk][p%memChunk]
}

// append adds r as the record of index end(); an empty log starts at index.
func (l *memLog) append(index uint64, r memRec) {
	if l.n == 0 {
		*l = memLog{off: index}
	}
	p := l.head + l.n
	if p/memChunk == len(l.chunks) {
		l.chunks = append(l.chunks, new([memChunk]memRec))
	}
	l.chunks[p/memChunk][p%memChunk] = r
	l.n++
}

// truncate keeps the records before index (off <= index <= end()).
func (l *memLog) truncate(index uint64) {
	n := int(index - l.off)
	if n == 0 {
		*l = memLog{off: index}
		return
	}
	last := (l.head + n - 1) / memChunk
	chunks := make([]*[memChunk]memRec, last+1)
	copy(chunks, l.chunks[:last])
	fresh := *l.chunks[last]
	chunks[last] = &fresh
	l.chunks, l.n = chunks, n
}

// dropBefore removes the records before index (off <= index <= end()).
func (l *memLog) dropBefore(index uint64) {
	d := int(index - l.off)
	if d == l.n {
		*l = memLog{off: index}
		return
	}
	l.head += d
	l.n -= d
	l.off = index
	whole := l.head / memChunk
	l.chunks = l.chunks[whole:]
	l.head -= whole * memChunk
}
