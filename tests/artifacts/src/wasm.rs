//! Just enough of the WebAssembly binary format to list a module's imports and exports
//! (<https://webassembly.github.io/spec/core/binary/modules.html>), so these tests need no
//! parser crate (whose features would otherwise unify with wasmtime's).

/// The start of every core module: magic `\0asm`, then version 1 (little-endian).
pub const HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// What an import or export names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Func,
    Table,
    Memory,
    Global,
    Tag,
}

impl Kind {
    fn from_byte(byte: u8) -> Result<Self, String> {
        Ok(match byte {
            0 => Kind::Func,
            1 => Kind::Table,
            2 => Kind::Memory,
            3 => Kind::Global,
            4 => Kind::Tag,
            other => return Err(format!("unknown external kind {other:#x}")),
        })
    }
}

/// An import: `(module, name, kind)`.
pub type Import = (String, String, Kind);
/// An export: `(name, kind)`.
pub type Export = (String, Kind);

/// A module's imports and exports.
#[derive(Debug, Default)]
pub struct Module {
    pub imports: Vec<Import>,
    pub exports: Vec<Export>,
}

impl Module {
    /// Reads the import and export sections of a binary module; skips every other section.
    pub fn parse(bytes: &[u8]) -> Result<Module, String> {
        let rest = bytes
            .strip_prefix(&HEADER)
            .ok_or("not a version-1 core wasm module (bad magic or version)")?;
        let mut reader = Reader { bytes: rest };
        let mut module = Module::default();
        while !reader.bytes.is_empty() {
            let id = reader.byte()?;
            let size = reader.len()?;
            let mut section = Reader {
                bytes: reader.take(size)?,
            };
            match id {
                2 => {
                    for _ in 0..section.len()? {
                        let import = (section.name()?, section.name()?, section.import_desc()?);
                        module.imports.push(import);
                    }
                }
                7 => {
                    for _ in 0..section.len()? {
                        let name = section.name()?;
                        let kind = Kind::from_byte(section.byte()?)?;
                        section.leb()?;
                        module.exports.push((name, kind));
                    }
                }
                _ => continue,
            }
            if !section.bytes.is_empty() {
                return Err(format!(
                    "section {id} has {} trailing bytes",
                    section.bytes.len()
                ));
            }
        }
        Ok(module)
    }

    /// Whether the module exports a function called `name`.
    pub fn exports_func(&self, name: &str) -> bool {
        self.exports
            .iter()
            .any(|(n, k)| n == name && *k == Kind::Func)
    }
}

/// A cursor over bytes; every read checks the bounds.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("wanted {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// An unsigned LEB128 number of up to 64 bits.
    fn leb(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("LEB128 number longer than 64 bits".to_owned())
    }

    fn len(&mut self) -> Result<usize, String> {
        usize::try_from(self.leb()?).map_err(|e| e.to_string())
    }

    fn name(&mut self) -> Result<String, String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| e.to_string())
    }

    /// An import's kind and type, whose encoding depends on the kind.
    fn import_desc(&mut self) -> Result<Kind, String> {
        let kind = Kind::from_byte(self.byte()?)?;
        match kind {
            Kind::Func => {
                self.leb()?; // type index
            }
            Kind::Table => {
                self.byte()?; // reference type (funcref, externref)
                self.limits()?;
            }
            Kind::Memory => self.limits()?,
            Kind::Global => {
                self.byte()?; // value type
                self.byte()?; // mutability
            }
            Kind::Tag => {
                self.byte()?; // attribute
                self.leb()?; // type index
            }
        }
        Ok(kind)
    }

    /// Limits: flags, minimum, and a maximum if flag bit 0 is set (shared and 64-bit memories
    /// set other bits; their numbers are still LEB128).
    fn limits(&mut self) -> Result<(), String> {
        let flags = self.byte()?;
        self.leb()?;
        if flags & 1 != 0 {
            self.leb()?;
        }
        Ok(())
    }
}
