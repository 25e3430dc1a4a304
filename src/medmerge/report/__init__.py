"""Tables and plots made from the JSON the stages wrote."""
