-- v1: people with a surname.
CREATE TABLE IF NOT EXISTS people (
    id bigserial PRIMARY KEY,
    surname text NOT NULL
);
