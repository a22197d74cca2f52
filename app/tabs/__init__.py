"""One module per tab of the app: its layout and wiring, over the Gradio-free logic in app/."""
