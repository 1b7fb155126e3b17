package policy

import (
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Export names of the ABI (policy-wasm/ABI.md).
const (
	exportMemory     = "memory"
	exportABIVersion = "regcred_abi_version"
	exportAlloc      = "regcred_alloc"
	exportDealloc    = "regcred_dealloc"
	exportEvaluate   = "regcred_evaluate"
)

const pageSize = 65536

// preScan reads the binary's import and memory sections before compiling: any import
// (function, table, memory, global, tag) is refused, and so is a memory whose minimum
// is above the limit. Malformed binaries are left to wazero's compiler to report.
func preScan(bin []byte, memoryLimit uint64) error {
	r := &reader{b: bin}
	if len(bin) < 8 || string(bin[:4]) != "\x00asm" {
		return nil
	}
	r.pos = 8
	for r.pos < len(r.b) {
		id, ok := r.byte()
		if !ok {
			return nil
		}
		size, ok := r.u32()
		if !ok || uint64(r.pos)+uint64(size) > uint64(len(r.b)) {
			return nil
		}
		section := &reader{b: r.b[r.pos : r.pos+int(size)]}
		r.pos += int(size)
		switch id {
		case 2: // imports
			count, ok := section.u32()
			if !ok || count == 0 {
				continue
			}
			module, ok1 := section.name()
			name, ok2 := section.name()
			if !ok1 || !ok2 {
				return nil
			}
			return &LoadError{Kind: ErrUnexpectedImport, Detail: fmt.Sprintf("%q %q", module, name)}
		case 5: // memories
			count, ok := section.u32()
			if !ok {
				return nil
			}
			for range count {
				flags, ok1 := section.byte()
				minPages, ok2 := section.u64()
				if !ok1 || !ok2 {
					return nil
				}
				if flags&1 != 0 { // a maximum follows
					if _, ok := section.u64(); !ok {
						return nil
					}
				}
				if minimum := minPages * pageSize; minPages > 1<<32 || minimum > memoryLimit {
					return &LoadError{Kind: ErrInitialMemory,
						Detail: fmt.Sprintf("%d pages (%d bytes) against a limit of %d bytes", minPages, minimum, memoryLimit)}
				}
			}
		case 10: // code: nothing of interest follows
			return nil
		}
	}
	return nil
}

type reader struct {
	b   []byte
	pos int
}

func (r *reader) byte() (byte, bool) {
	if r.pos >= len(r.b) {
		return 0, false
	}
	r.pos++
	return r.b[r.pos-1], true
}

// u64 reads an unsigned LEB128 of up to 64 bits.
func (r *reader) u64() (uint64, bool) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, ok := r.byte()
		if !ok {
			return 0, false
		}
		v |= uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

func (r *reader) u32() (uint32, bool) {
	v, ok := r.u64()
	if !ok || v > 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}

func (r *reader) name() (string, bool) {
	n, ok := r.u32()
	if !ok || uint64(r.pos)+uint64(n) > uint64(len(r.b)) {
		return "", false
	}
	s := string(r.b[r.pos : r.pos+int(n)])
	r.pos += int(n)
	return s, true
}

// checkShape checks the compiled module's imports and exports against the ABI.
func checkShape(m wazero.CompiledModule) error {
	if imports := m.ImportedFunctions(); len(imports) > 0 {
		module, name, _ := imports[0].Import()
		return &LoadError{Kind: ErrUnexpectedImport, Detail: fmt.Sprintf("%q %q", module, name)}
	}
	if imports := m.ImportedMemories(); len(imports) > 0 {
		module, name, _ := imports[0].Import()
		return &LoadError{Kind: ErrUnexpectedImport, Detail: fmt.Sprintf("%q %q", module, name)}
	}
	if _, ok := m.ExportedMemories()[exportMemory]; !ok {
		if _, isFunc := m.ExportedFunctions()[exportMemory]; isFunc {
			return &LoadError{Kind: ErrExportType, Detail: exportMemory + " is not a memory"}
		}
		return &LoadError{Kind: ErrMissingExport, Detail: exportMemory}
	}
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	funcs := m.ExportedFunctions()
	for _, want := range []struct {
		name            string
		params, results []api.ValueType
		shape           string
	}{
		{exportABIVersion, nil, []api.ValueType{i32}, "() -> i32"},
		{exportAlloc, []api.ValueType{i32}, []api.ValueType{i32}, "(i32) -> i32"},
		{exportDealloc, []api.ValueType{i32, i32}, nil, "(i32, i32) -> ()"},
		{exportEvaluate, []api.ValueType{i32, i32}, []api.ValueType{i64}, "(i32, i32) -> i64"},
	} {
		def, ok := funcs[want.name]
		if !ok {
			if _, isMemory := m.ExportedMemories()[want.name]; isMemory {
				return &LoadError{Kind: ErrExportType, Detail: want.name + " must be a function " + want.shape}
			}
			return &LoadError{Kind: ErrMissingExport, Detail: want.name}
		}
		if !sameTypes(def.ParamTypes(), want.params) || !sameTypes(def.ResultTypes(), want.results) {
			return &LoadError{Kind: ErrExportType, Detail: want.name + " must be a function " + want.shape}
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
