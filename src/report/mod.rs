//! Output: status table (comfy-table), JSON, progress (indicatif). stdout is data, stderr is
//! progress and diagnostics.
