pub mod va;
