-- v2, expand: last_name beside surname, kept equal by a trigger whichever of them a version writes,
-- then the backfill. All in one transaction, so no row written meanwhile is missed.
ALTER TABLE people ADD COLUMN IF NOT EXISTS last_name text;

CREATE OR REPLACE FUNCTION people_same_name() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.last_name := coalesce(NEW.last_name, NEW.surname);
        NEW.surname := coalesce(NEW.surname, NEW.last_name);
    ELSIF NEW.last_name IS DISTINCT FROM OLD.last_name THEN
        NEW.surname := NEW.last_name;
    ELSIF NEW.surname IS DISTINCT FROM OLD.surname THEN
        NEW.last_name := NEW.surname;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS people_same_name ON people;
CREATE TRIGGER people_same_name BEFORE INSERT OR UPDATE ON people
    FOR EACH ROW EXECUTE FUNCTION people_same_name();

UPDATE people SET last_name = surname WHERE last_name IS NULL;
