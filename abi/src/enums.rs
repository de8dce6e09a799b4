//! The machinery shared by every ABI enum: the [`abi_enum!`] table macro and the
//! [`UnknownValue`] error that conversion from a raw `u32` returns.
//!
//! Each enum is written once as a table of `Variant = number => "SPEC_NAME"` rows; the macro
//! derives the `#[repr(u32)]` type, `TryFrom<u32>` (unknown numbers are an error, never a
//! panic), `From<Enum> for u32`, `Display` (the spec's name) and a list of all values.

/// A raw number that names no value of the ABI enum it was read as.
///
/// Returned by every `TryFrom<u32>` in this crate, e.g. `Status::try_from(99)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{value} is not a valid {type_name}")]
pub struct UnknownValue {
    /// The spec's name of the type the number was read as, e.g. `proxy_status_t`.
    pub type_name: &'static str,
    /// The number that was read.
    pub value: u32,
}

/// Defines one `#[repr(u32)]` ABI enum from a table of rows
/// `Variant = number => "SPEC_NAME",` with the spec's type name after the enum name.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $spec_type:literal {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $spec_name:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// The spec's name for this type, e.g. `proxy_status_t`.
            pub const SPEC_TYPE: &'static str = $spec_type;

            /// Every value of this type, in the order the spec lists them (ascending).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spec's name for this value, e.g. `NOT_FOUND`.
            pub const fn spec_name(self) -> &'static str {
                match self {
                    $($name::$variant => $spec_name,)+
                }
            }

            /// The number this value has on the wire.
            pub const fn as_u32(self) -> u32 {
                self as u32
            }
        }

        impl ::core::convert::TryFrom<u32> for $name {
            type Error = $crate::UnknownValue;

            fn try_from(value: u32) -> ::core::result::Result<Self, $crate::UnknownValue> {
                match value {
                    $($value => Ok($name::$variant),)+
                    _ => Err($crate::UnknownValue { type_name: $spec_type, value }),
                }
            }
        }

        impl ::core::convert::From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value as u32
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.spec_name())
            }
        }
    };
}

pub(crate) use abi_enum;

#[cfg(test)]
mod tests {
    use super::*;

    abi_enum! {
        /// A two-value enum to exercise the macro.
        pub enum Sample: "sample_t" {
            /// Zero.
            Zero = 0 => "ZERO",
            /// Five, after a gap.
            Five = 5 => "FIVE",
        }
    }

    #[test]
    fn converts_both_ways_and_rejects_gaps() {
        assert_eq!(Sample::try_from(0), Ok(Sample::Zero));
        assert_eq!(Sample::try_from(5), Ok(Sample::Five));
        assert_eq!(
            Sample::try_from(1),
            Err(UnknownValue {
                type_name: "sample_t",
                value: 1
            })
        );
        assert!(Sample::try_from(u32::MAX).is_err());
        assert_eq!(u32::from(Sample::Five), 5);
        assert_eq!(Sample::Five.as_u32(), 5);
        assert_eq!(Sample::ALL, &[Sample::Zero, Sample::Five]);
    }

    #[test]
    fn displays_spec_names() {
        assert_eq!(Sample::Five.to_string(), "FIVE");
        assert_eq!(Sample::SPEC_TYPE, "sample_t");
        let err = Sample::try_from(7).expect_err("7 is not a Sample");
        assert_eq!(err.to_string(), "7 is not a valid sample_t");
    }
}
