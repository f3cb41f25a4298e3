"""The model families behind `server.sam_model`'s seam: SAM 1 (`sam1`) and SAM 2.1 (`sam2`)."""
