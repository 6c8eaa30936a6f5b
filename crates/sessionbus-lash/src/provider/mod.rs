//! lash `Provider`s a worker can run turns with.

pub mod openai;
