"""The requesting side of openclaw#69478: agents whose runs need exec approval, and the operator who answers."""
