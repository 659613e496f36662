//! PostgreSQL wire protocol front end (built in the node issue).
