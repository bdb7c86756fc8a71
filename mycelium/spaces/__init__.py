"""READ docs/dev/store-spaces-contract.md FIRST: the fixed interface between Soil and spaces."""
