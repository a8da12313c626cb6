package correlate

// Changing the sampling rate while producers run.

// SampleCounts are what sampling did with the packets of a period, per
// direction (index 0 = inbound, 1 = outbound): the packets counted, those
// sampled out, and those sampling kept (they became records, or were
// skipped once their socket's state was known). The packets neither
// sampled out nor kept were skipped before sampling (handshake segments, a
// full flow table).
type SampleCounts struct {
	Packets, SampledOut, Sampled [2]uint64
}

// Sub returns c - o, field by field: the counts of the period between two
// readings.
func (c SampleCounts) Sub(o SampleCounts) SampleCounts {
	for d := range 2 {
		c.Packets[d] -= o.Packets[d]
		c.SampledOut[d] -= o.SampledOut[d]
		c.Sampled[d] -= o.Sampled[d]
	}
	return c
}

// PPL returns the sampling rate in force for packets that come without
// state.
func (e *Engine) PPL() uint32 {
	e.lockAll()
	defer e.unlockAll()
	return uint32(e.ppl)
}

// SetPPL changes the sampling rate of packets that come without state
// (Config.PPL; 0 means 1) while producers run, and returns what sampling
// did until then. The change falls between two blocks of every producer:
// each packet counted before it was sampled with the old rate, each one
// after with ppl, so none is counted twice or left out. Each flow's count
// starts again at the change: the ppl-th packet of a flow after it is the
// first logged, so a flow with n packets between two changes has
// floor(n/ppl) of them kept. It is safe for concurrent use.
func (e *Engine) SetPPL(ppl uint32) SampleCounts {
	if ppl == 0 {
		ppl = 1
	}
	e.lockAll()
	defer e.unlockAll()
	before := e.sampleCounts()
	e.ppl = uint64(ppl)
	e.epoch++
	return before
}

// Sampled returns what sampling did so far. It is safe for concurrent use.
func (e *Engine) Sampled() SampleCounts { return e.sampleCounts() }

func (e *Engine) sampleCounts() SampleCounts {
	var c SampleCounts
	for i := range e.prods {
		pr := &e.prods[i]
		for d := range 2 {
			c.Packets[d] += pr.counts[cPackets][d].Load()
			c.SampledOut[d] += pr.counts[cSampledOut][d].Load()
			c.Sampled[d] += pr.counts[cSampled][d].Load()
		}
	}
	return c
}

func (e *Engine) lockAll() {
	for i := range e.prods {
		e.prods[i].mu.Lock()
	}
}

func (e *Engine) unlockAll() {
	for i := range e.prods {
		e.prods[i].mu.Unlock()
	}
}

// A flow's count is one word, so that counting a packet in it and taking
// it out of the table are one atomic step each and never interleave: the
// low epochShift bits count packets, the bits above them hold the epoch
// (the generation of the ppl setting, modulo 1<<15) the count belongs to,
// and the top bit (deadBit) is set once, when the flow leaves the table.
// A packet is never counted in a flow that left it, and a flow is never
// taken out while a packet is being counted in it (see flowTable.kill).
const (
	epochShift = 48
	countMask  = 1<<epochShift - 1
	epochMask  = 1<<15 - 1
	deadBit    = 1 << 63
)

// advance counts one packet in flow f for sampling at the given epoch and
// returns the flow's count in that epoch: 1 for its first packet since the
// epoch began. It returns false, counting nothing, if f has left the
// table. Producers of one flow may advance it concurrently; they all see
// the same epoch (SetPPL changes it under every producer's lock).
func advance(f *flow, epoch uint64) (uint64, bool) {
	tag := (epoch & epochMask) << epochShift
	for {
		old := f.count.Load()
		if old&deadBit != 0 {
			return 0, false
		}
		n := uint64(1)
		if old&^countMask == tag {
			n = old&countMask + 1
		}
		if f.count.CompareAndSwap(old, tag|n&countMask) {
			return n, true
		}
	}
}
