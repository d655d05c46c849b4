//! Trellis kernel programs. One file per attach point; the maps they share are in `maps`.
//!
//! Every entry point is a thin `match` over a `try_` function and states what happens when
//! the function fails: capture fails closed (the connect is refused), guards fail closed (the
//! SYN is dropped).
#![no_std]
#![no_main]

mod capture;
mod connect4;
mod connect6;
mod guard;
mod maps;
mod sockops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
